"""Checkpoint choice's renders with the UNet replayed from CUDA graphs (shared/ml/cuda_graphs.py),
tiny preset on a GPU. Skipped where there is no CUDA device (CI, the 2-core machines); run on a
GPU machine with `python -m pytest --noconftest tests/trainer/test_render_graphs.py`.

- Every snapshot's graphed renders equal its eager ones, and the snapshots differ: the graphs see
  the weights each snapshot loads in place.
- One capture serves every step of every snapshot.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from shared.ml import cuda_graphs
from tests.trainer.trainer_snapshots import random_snapshots

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")


@pytest.fixture(autouse=True)
def _full_float32():
    """No TF32: cuDNN may pick another algorithm inside a capture than outside (TF32 rounds)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_graphed_snapshot_renders_equal_eager_with_one_capture() -> None:
    from services.trainer import lora
    from services.trainer.selection import render_snapshots, render_validation
    from shared.ml import loading

    # float32, not the training dtype: fp16's rounding differs between a capture's kernel
    # choices and an eager call's, and 3 steps of a random model amplify it
    pipe = loading.load_pipeline("tiny", "cuda", dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    lora.add_lora(pipe, lora.PRESETS["tiny"], seed=0)
    snapshots = random_snapshots(pipe)
    seeds, steps = (11, 22), 3
    kw = {"size": 64, "steps": steps, "seeds": seeds}
    eager = render_snapshots(pipe, snapshots, "a portrait photo", graphs=False, **kw)
    with cuda_graphs.graphed_unet(pipe.unet) as graphed:
        assert graphed is not None
        mine = []
        for _, state in snapshots:
            lora.load_lora_state(pipe, state)
            mine.append(render_validation(pipe, "a portrait photo", **kw))
        assert graphed.graphs.captures == 1
        assert graphed.graphs.replays == len(snapshots) * steps
    assert "forward" not in vars(pipe.unet)  # the block took its graphs with it
    for theirs, ours in zip(eager, mine, strict=True):
        for a, b in zip(theirs, ours, strict=True):
            assert np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max() <= 1
    assert np.abs(np.asarray(mine[0][0], np.int16) - np.asarray(mine[1][0], np.int16)).max() > 1
    # the product's call renders the same through its own graphs
    again = render_snapshots(pipe, snapshots, "a portrait photo", **kw)
    for theirs, ours in zip(eager, again, strict=True):
        for a, b in zip(theirs, ours, strict=True):
            assert np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max() <= 1
