"""CUDA graphs of the UNet and the ControlNets of the generator, captured per input shape
(shared/ml/cuda_graphs.py): the launch overhead of an eager forward gone without a compiler, so
a worker is warm in seconds, not minutes (issue 21).

`GraphedForward` is a `StaticForward` (services/generator/compiled.py): the same canonical call
form (contiguous tensors, a float32 timestep per row, the ControlNet scale as a tensor) and the
same eager fallback for calls outside it, with `ShapeGraphs` instead of a compiled function.
`warm_up` captures the styles' buckets ahead of any job; another batch size of a bucket's spatial
size (a partial batch) is captured when it first comes, in a fraction of a second. Batches are not
padded: a graph per batch size costs only its capture. Spatial sizes outside the buckets (a
detailer crop that is not square) run eagerly, since each graph keeps its static inputs and
outputs (the UNet's 13 ControlNet residuals among them) for the life of the process. LoRAs are
baked in place (`BakedLoras`: same storage, new values), which the graphs see.
"""

from __future__ import annotations

import torch

from services.generator.compiled import StaticForward
from shared.ml.cuda_graphs import MAX_GRAPHS, ShapeGraphs, eager, graphs_wanted

__all__ = ["GraphedForward", "eager", "graph_networks"]


class GraphedForward(StaticForward):
    """A network's forward replayed from CUDA graphs (see the module docstring). Off CUDA (the
    tiny preset on a CPU), with autograd on or inside `eager()`, every call runs eagerly."""

    def __init__(self, module: torch.nn.Module, kind: str, batches, max_graphs: int = MAX_GRAPHS):
        self.max_graphs = max_graphs
        super().__init__(module, kind, batches)

    def _runner(self, **_) -> ShapeGraphs:
        return ShapeGraphs(self._core, self.module, self.kind, self.max_graphs)

    @property
    def graphs(self) -> dict:
        return self.compiled.graphs

    @property
    def captures(self) -> int:
        return self.compiled.captures

    @property
    def replays(self) -> int:
        return self.compiled.replays

    def _rows(self, sample, hidden, args, kwargs) -> int | None:
        """A canonical CUDA call of a bucket's spatial size is graphed at its own batch size (no
        padding); None: run it eagerly."""
        if not graphs_wanted(sample) or tuple(sample.shape[-2:]) not in self.batches:
            return None
        return sample.shape[0] if self._canonical(hidden, args, kwargs) else None


def graph_networks(models, buckets, max_graphs: int = MAX_GRAPHS) -> dict:
    """Install a `GraphedForward` on the UNet and each ControlNet (in place).
    `buckets` (compiled.Bucket) are the shapes `compiled.warm_up` captures ahead of any job.
    Returns {name: GraphedForward}."""
    from services.generator.compiled import COMPILED

    nets = models.networks()
    installed = {}
    for name in COMPILED:
        net = nets.get(name)
        if net is None:
            continue
        if isinstance(getattr(net, "forward", None), GraphedForward):
            installed[name] = net.forward
            continue
        batches: dict[tuple[int, int], list[int]] = {}
        for b in buckets:
            if b.net == name:
                batches.setdefault((b.height, b.width), []).append(b.batch)
        kind = "unet" if name == "unet" else "controlnet"
        net.forward = installed[name] = GraphedForward(net, kind, batches, max_graphs)
    return installed
