"""The trainer's compiled step (TRAIN_COMPILE) with its compile cache, on the tiny preset, CPU.

- A worker process warms up by compiling the training step (inductor) into the compile cache, on a
  thread as the worker does; a job afterwards, on another thread, compiles nothing (dynamo's
  `fail_on_recompile` stance raises if it would) and trains the same LoRA as eager steps, within
  the tolerances below.
- A restarted process loads the step from the cache (FX-graph cache hits, no misses) instead of
  generating code again, and warms up faster.
- `studio worker train` with TRAIN_COMPILE=on answers /readyz 503 ("models are loading and
  compiling") until that warm-up is done, then 200.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO, Processes

LOSS_TOLERANCE = 1e-4  # max |compiled - eager| of the 6 losses (float32)
# max |compiled - eager| of the LoRA weights after 6 steps, over the largest |weight| change: AdamW
# divides by the gradient's running RMS, so a rounding-size difference in a near-zero gradient
# moves a weight by up to a few % of the learning rate (measured: 0.2e-3 of steps of 1e-2 each).
WEIGHT_TOLERANCE = 0.02

_WARM_UP_THEN_A_JOB = """
import json, sys, time
from dataclasses import replace
import torch
torch.set_num_threads(1)
from PIL import Image, ImageOps
import skimage.data
from torch._dynamo.utils import counters
from services.trainer import lora, train

import threading
began = time.perf_counter()
warmed = []  # the worker warms up on a thread and runs jobs on another: so does this
thread = threading.Thread(target=lambda: warmed.append(train.warm_training_pipeline("tiny", "cpu")))
thread.start()
thread.join()
pipe = warmed[0]
warm_seconds = time.perf_counter() - began
config = train.training_config("tiny", "cpu")
graphs = counters["stats"]["unique_graphs"]
face = Image.fromarray(skimage.data.astronaut()).crop((140, 20, 340, 220))
images = [face, ImageOps.mirror(face), face.rotate(5), face.rotate(-5)]
torch.compiler.set_stance("fail_on_recompile")  # a job that would compile raises
lora.add_lora(pipe, config, seed=1)  # the weights a seed-1 training starts from
start = lora.lora_state(pipe)
lora.remove_lora(pipe)
compiled = lora.train_lora(pipe, images, "a photo of zuvek woman", config, seed=1, total_steps=6)
compiled_state = lora.lora_state(pipe)
lora.remove_lora(pipe)
eager = lora.train_lora(pipe, images, "a photo of zuvek woman", replace(config, compile=False), seed=1,
                        total_steps=6)
eager_state = lora.lora_state(pipe)
lora.remove_lora(pipe)
inductor = counters["inductor"]
print(json.dumps({
    "compile": config.compile, "warm_seconds": warm_seconds,
    "hit": inductor["fxgraph_cache_hit"], "miss": inductor["fxgraph_cache_miss"],
    "new_graphs_in_job": counters["stats"]["unique_graphs"] - graphs,
    "loss_diff": max(abs(a - b) for a, b in zip(compiled.losses, eager.losses, strict=True)),
    "weight_diff": max((compiled_state[k] - eager_state[k]).abs().max().item() for k in eager_state),
    "weight_change": max((eager_state[k] - start[k]).abs().max().item() for k in eager_state),
}))
"""


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
    """One compile cache for the module: the worker test loads what the first test compiled."""
    return tmp_path_factory.mktemp("compile-cache")


def _warm_up_then_a_job(cache) -> dict:
    env = {"TRAIN_COMPILE": "on", "COMPILE_CACHE_DIR": str(cache), "MODEL_PRESET": "tiny", "DEVICE": "cpu"}
    import os

    done = subprocess.run(
        [sys.executable, "-c", _WARM_UP_THEN_A_JOB],
        cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_compiled_step_trains_like_eager_and_survives_a_restart(compile_cache):
    cold = _warm_up_then_a_job(compile_cache)
    assert cold["compile"] is True
    assert cold["miss"] >= 1 and cold["hit"] == 0, cold  # compiled, into the cache
    assert cold["new_graphs_in_job"] == 0, cold  # the warm-up compiled what the job runs
    assert cold["weight_change"] > 0.01, cold  # it really trained
    assert cold["loss_diff"] < LOSS_TOLERANCE, cold
    assert cold["weight_diff"] < WEIGHT_TOLERANCE * cold["weight_change"], cold
    assert list(compile_cache.iterdir())[0].name.endswith("-cpu")  # keyed by torch, CUDA, device

    warm = _warm_up_then_a_job(compile_cache)
    assert warm["hit"] >= 1 and warm["miss"] == 0, warm  # loaded, not generated again
    assert warm["new_graphs_in_job"] == 0 and warm["loss_diff"] < LOSS_TOLERANCE, warm
    assert warm["warm_seconds"] < cold["warm_seconds"], (cold, warm)
    print(f"warm-up: cold cache {cold['warm_seconds']:.1f} s, warm cache {warm['warm_seconds']:.1f} s")


@pytest.mark.slow
def test_train_worker_is_not_ready_until_its_step_is_compiled(procs: Processes, compile_cache):
    # One torch thread, as in the test above: on a CPU inductor's cache key holds the thread count.
    env = {"TRAIN_COMPILE": "on", "COMPILE_CACHE_DIR": str(compile_cache), "OMP_NUM_THREADS": "1"}
    worker = procs.warming_worker("train", timeout=600, **env)
    with open(worker.log_path, errors="replace") as log:  # compiled, not fallen back to eager steps
        assert "compiled the training step in" in log.read()


def test_a_worker_whose_compile_fails_trains_eagerly(monkeypatch, caplog):
    """A compiler or driver problem at warm-up must not fail every training job the same way."""
    from services.trainer import lora, train
    from shared.config import get_settings

    def broken(pipe, config):
        raise RuntimeError("inductor: C++ compile failed")

    monkeypatch.setattr(get_settings(), "train_compile", "on")
    monkeypatch.setattr(lora, "warm_up", broken)
    monkeypatch.setattr(train, "_compile_failed", False)
    monkeypatch.setattr(train, "load_training_pipeline", lambda preset, device: "the pipeline")
    monkeypatch.setattr(train, "use_compile_cache", lambda folder, device: folder)
    assert train.training_config("tiny", "cpu").compile is True
    assert train.warm_training_pipeline("tiny", "cpu") == "the pipeline"
    assert train.training_config("tiny", "cpu").compile is False
    assert "this worker trains with eager steps" in caplog.text


def test_a_worker_whose_compile_cache_is_unusable_trains_eagerly(monkeypatch, caplog):
    """A full, read-only or missing cache volume must not keep the worker from training."""
    from services.trainer import train
    from shared.config import get_settings

    def unusable(folder, device):
        raise PermissionError(f"{folder}: read-only file system")

    monkeypatch.setattr(get_settings(), "train_compile", "on")
    monkeypatch.setattr(train, "_compile_failed", False)
    monkeypatch.setattr(train, "use_compile_cache", unusable)
    assert train.training_config("tiny", "cpu").compile is False
    assert train.training_config("tiny", "cpu").compile is False  # and stays so, without retrying
    assert caplog.text.count("the compile cache folder is not usable") == 1
