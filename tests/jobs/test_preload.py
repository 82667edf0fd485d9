"""A GPU worker's main process imports the ML libraries before forking its pool (shared/jobs/celery_app.py
`preload`) without touching the CUDA runtime: once it has, every forked pool process fails its
first CUDA call ("Cannot re-initialize CUDA in forked subprocess", seen on an H200 when diffusers
asked `torch.accelerator.is_available()` at import)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# Runs in a fresh interpreter: a GPU host is simulated by NVML answering "2 GPUs"; a call into the
# CUDA runtime's device count -- what poisons fork on a real GPU host -- is recorded.
PROBE = """
import json, sys, traceback
import torch, torch.cuda
calls = []
def runtime_count():
    calls.append("".join(traceback.format_stack(limit=8)))
    return 0
torch._C._cuda_getDeviceCount = runtime_count
torch.cuda._device_count_nvml = lambda: 2
from shared.jobs.celery_app import preload
preload(sys.argv[1])
print(json.dumps(calls))
"""


@pytest.mark.parametrize("queue", ["train", "generate"])
def test_preloading_a_gpu_worker_leaves_fork_safe_for_cuda(queue: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTORCH_NVML_BASED_CUDA_CHECK"}
    env["PYTHONPATH"] = str(REPO)
    out = subprocess.run(
        [sys.executable, "-c", PROBE, queue], env=env, cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    calls = json.loads(out.stdout.strip().splitlines()[-1])
    assert calls == [], "the CUDA runtime was asked for its devices before the fork:\n" + calls[0]
