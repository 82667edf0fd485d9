"""A generate worker is ready only once its models are warm, and compiled kernels survive a restart.

- `studio worker generate`: /readyz answers 503 ("models are loading and compiling") while the
  pool process loads (and, on CUDA, compiles) its models, then 200, before any job arrives.
- The compile cache under MODEL_DIR: a second process compiling the same bucket loads inductor's
  graph from the cache (hits, no misses) instead of generating code again.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, Processes


def test_generate_worker_is_not_ready_until_its_models_are_warm(procs: Processes):
    procs.warming_worker("generate", timeout=120)


_COMPILE_ONE_BUCKET = """
import json, sys, time, torch
torch.set_num_threads(1)
from services.generator import compiled
from shared.ml.compile_cache import use_compile_cache
from services.generator.resident import ResidentModels
from shared.ml import loading
base = loading.load_base_pipeline("tiny", "cpu")
models = ResidentModels(base, None, None, None, {}, "tiny", "tiny")
cache = use_compile_cache(sys.argv[1] + "/compile-cache", "cpu")
bucket = compiled.Bucket("unet", 2, 12, 8)
compiled.compile_networks(models, [bucket])
began = time.perf_counter()
compiled.warm_up(models, [bucket])
c = torch._dynamo.utils.counters["inductor"]
print(json.dumps({"seconds": time.perf_counter() - began, "hit": c["fxgraph_cache_hit"],
                  "miss": c["fxgraph_cache_miss"], "cache": str(cache)}))
"""


@pytest.mark.slow
def test_compile_cache_survives_a_restart(tmp_path):
    def run() -> dict:
        done = subprocess.run(
            [sys.executable, "-c", _COMPILE_ONE_BUCKET, str(tmp_path)],
            cwd=REPO, capture_output=True, text=True, timeout=900, check=True,
        )  # fmt: skip
        return json.loads(done.stdout.strip().splitlines()[-1])

    cold = run()
    assert cold["miss"] >= 1 and cold["hit"] == 0, cold
    assert "compile-cache/torch" in cold["cache"] and cold["cache"].endswith("-cpu")
    began = time.perf_counter()
    warm = run()
    assert warm["hit"] >= 1 and warm["miss"] == 0, warm
    assert warm["seconds"] < cold["seconds"], (cold, warm)
    took = time.perf_counter() - began
    print(f"cold {cold['seconds']:.1f} s, warm {warm['seconds']:.1f} s (process {took:.1f} s)")


def test_a_replaced_pool_process_is_not_ready_until_it_is_warm_again(tmp_path, monkeypatch):
    """Celery replaces a pool process killed by a hard time limit or the OOM killer; the old one's
    mark stayed, so /readyz said 200 while the new one loaded its models."""
    import threading

    from shared import warm

    marker = tmp_path / "warm"
    marker.write_text("generator ready in 9.0 s")  # the mark of the pool process that died
    monkeypatch.setenv(warm.ENV, str(marker))
    loading = threading.Event()
    resident = warm.Resident(lambda: loading.wait(30) and "pipeline", "generator")
    resident.start_in_background()
    with pytest.raises(RuntimeError, match="models are loading"):
        warm.check_warm()
    loading.set()
    assert resident.get() == "pipeline"
    warm.check_warm()  # ready again
