"""torch.compile's on-disk caches on a volume that survives restarts (issue 21).

A cold compile of the generator's shape buckets or of the trainer's step takes minutes on a GPU
(183 s for the training step on an H100, bench/results/train_h100_compiled_step.json); with
inductor's FX-graph cache (and AOTAutograd's, for the backward) and Triton's kernel cache on disk, a
restarted worker loads the kernels instead of generating them again (the trainer's step, tiny
preset, 2-core CPU: 112 s cold, 15 s from the cache; tests/trainer/test_compiled_step.py prints
both). The folder is keyed by torch version + CUDA version + GPU name; inductor's own keys add the
graph, its shapes and the compile options.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

import torch


def cache_key(device: torch.device | str | None = None) -> str:
    """torch version + CUDA version + GPU name (or "cpu"): compiled kernels are valid only there.

    Example: "torch2.14.1_cu130-cuda13.0-NVIDIA_H100_80GB_HBM3"."""
    where = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    gpu = torch.cuda.get_device_name(where) if where.type == "cuda" else "cpu"
    raw = f"torch{torch.__version__}-cuda{torch.version.cuda or 'none'}-{gpu}"
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", raw)


@functools.cache  # once per folder and device: the trainer asks at every job
def use_compile_cache(folder: Path, device: torch.device | str | None = None) -> Path:
    """Point inductor's and Triton's on-disk caches at `folder/<cache_key>` and return that path.

    `folder` is the COMPILE_CACHE_DIR setting (default MODEL_DIR/compile-cache, the models volume in
    Kubernetes). Call it before the first compile of the process: inductor reads its cache folder
    from the environment."""
    path = Path(folder) / cache_key(device)
    path.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(path / "inductor")
    os.environ["TRITON_CACHE_DIR"] = str(path / "triton")
    import torch._functorch.config as functorch_config
    import torch._inductor.config as inductor_config

    # The defaults; a site config may have turned them off. AOTAutograd's cache holds a training
    # graph's forward + backward pair, so a cached training step skips tracing the backward too.
    inductor_config.fx_graph_cache = True
    if hasattr(inductor_config, "autotune_local_cache"):
        inductor_config.autotune_local_cache = True
    if hasattr(functorch_config, "enable_autograd_cache"):
        functorch_config.enable_autograd_cache = True
    return path
