"""shared/ml/cuda_graphs.py on a GPU: a process captures again after its earlier graphs are gone.

Skipped without CUDA (CI, the 2-core machines); on a GPU machine:
`python -m pytest --noconftest tests/ml/test_cuda_graphs.py`.
"""

from __future__ import annotations

import gc

import pytest
import torch

from shared.ml.cuda_graphs import ShapeGraphs

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA device")


@torch.no_grad()
def test_a_second_networks_graphs_capture_after_the_first_ones_are_gone() -> None:
    """The trainer graphs its UNet anew for each job, and drops the graphs after: the next job's
    capture must not go into the memory pool PyTorch freed with them (an allocator assertion, the
    shape then ran eagerly, and a random op after it failed: 2026-12-07 on an H200)."""
    for round_ in range(3):
        torch.manual_seed(round_)
        net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 8)).cuda()
        graphs = ShapeGraphs(net, net, f"net-{round_}")
        x = torch.randn(4, 16, device="cuda")
        out = graphs(x)
        assert graphs.captures == 1, f"round {round_}: the capture failed and ran eagerly"
        torch.testing.assert_close(out, net(x))
        torch.testing.assert_close(graphs(x * 2), net(x * 2))  # replayed, new input
        assert graphs.replays == 2
        del graphs, out
        gc.collect()
    torch.randn(3, device="cuda")  # the generator's state is sound after all of it
