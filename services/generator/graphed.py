"""CUDA graphs of the UNet and the ControlNets, captured per input shape: the launch overhead of
an eager forward gone without a compiler, so a worker is warm in seconds, not minutes.

Why: at small batches the eager networks are bound by Python and kernel launches, not by the
GPU (one portrait, 2 rows with classifier-free guidance, spends most of a denoising step
launching a thousand small kernels); a CUDA graph replays all of a forward's kernels with one
launch. torch.compile's "reduce-overhead" does the same after minutes of compiling per shape
(issue 21); capturing the eager forward takes about as long as running it three times.

How it works:
- `GraphedForward` is a `StaticForward` (services/generator/compiled.py): the same canonical call
  form (contiguous tensors, a float32 timestep per row, the ControlNet scale as a tensor) and the
  same eager fallback for calls outside it. Instead of a compiled function it keeps one
  `torch.cuda.CUDAGraph` per distinct set of input shapes, dtypes and strides, captured on the
  first call of that set (`warm_up` makes those calls for the styles' buckets ahead of any job;
  another batch size of a bucket's spatial size, a partial batch, is captured when it first comes,
  up to `max_graphs` per network). Batches are not padded: a graph per batch size costs only its
  capture. Spatial sizes outside the buckets (a detailer crop that is not square) run eagerly: each
  graph keeps its static inputs and outputs (the UNet's 13 ControlNet residuals among them) for the
  life of the process. Calls with autograd on run eagerly too (the pipelines run under no_grad).
- A call copies its tensors into the graph's static inputs, replays, and returns clones of the
  static outputs (the next replay overwrites them; schedulers keep model outputs between steps).
- All graphs of the process share one memory pool: they replay one after another on one stream,
  and each graph's static outputs stay referenced, so no capture reuses another's outputs.
- A graph reads the parameters at the addresses they had at capture. LoRAs are baked in place
  (`BakedLoras`: same storage, new values, which the graphs see). If a parameter's storage does
  change (a `.to()`, a reload), the network's graphs are dropped and captured again, never
  replayed against freed memory.

Source: PyTorch's "CUDA Graphs" notes (torch.cuda.graph, side-stream warm-up before capture,
sharing a memory pool between captures), https://pytorch.org/docs/stable/notes/cuda.html
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.utils import _pytree as pytree

from services.generator.compiled import StaticForward

log = logging.getLogger(__name__)

MAX_GRAPHS = 48  # per network: the styles' buckets, one-portrait shapes and partial batches
WARM_UP_RUNS = 2  # eager runs on a side stream before a capture (cuDNN plans, the allocator)

_state = threading.local()


@contextlib.contextmanager
def eager() -> Iterator[None]:
    """Within this block (on this thread) every GraphedForward runs the eager forward: the
    reference for the same-pictures checks."""
    before = getattr(_state, "eager", False)
    _state.eager = True
    try:
        yield
    finally:
        _state.eager = before


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    inputs: list[torch.Tensor]  # static input buffers, in pytree-flattened order
    outputs: object  # the static outputs (a pytree of tensors)


def _key(flat: list) -> tuple:
    return tuple(
        (tuple(x.shape), x.dtype, x.stride(), x.device) if isinstance(x, torch.Tensor) else x for x in flat
    )


def _static_like(x: torch.Tensor) -> torch.Tensor:
    """A buffer with `x`'s shape, strides, dtype and device, holding a copy of `x`."""
    buffer = torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device=x.device)
    return buffer.copy_(x)


@functools.cache
def _pool():
    """The memory pool every graph of the process shares (made on the first capture)."""
    return torch.cuda.graph_pool_handle()


class GraphedForward(StaticForward):
    """A network's forward replayed from CUDA graphs (see the module docstring). Off CUDA (the
    tiny preset on a CPU) every call runs the eager forward."""

    def __init__(self, module: torch.nn.Module, kind: str, batches, max_graphs: int = MAX_GRAPHS):
        self.max_graphs = max_graphs
        self.graphs: dict[tuple, _Graph] = {}
        self.captures = 0  # every capture of this network, recaptures after a storage change too
        self.replays = 0
        self._overflow: set[tuple] = set()
        self._uncapturable: set[tuple] = set()
        super().__init__(module, kind, batches)
        self._addresses = self._parameter_addresses()

    def _runner(self, **_):
        return self._replay

    def _parameter_addresses(self) -> list[int]:
        return [p.data_ptr() for p in self.module.parameters()]

    def _rows(self, sample, hidden, args, kwargs) -> int | None:
        """A canonical CUDA call of a bucket's spatial size is graphed at its own batch size (no
        padding); None: run it eagerly."""
        if getattr(_state, "eager", False) or sample.device.type != "cuda" or torch.is_grad_enabled():
            return None
        if tuple(sample.shape[-2:]) not in self.batches or not self._canonical(hidden, args, kwargs):
            return None
        return sample.shape[0]

    def _replay(self, *args):
        flat, spec = pytree.tree_flatten(args)
        if self._parameter_addresses() != self._addresses:
            log.warning("%s parameters moved: dropping %d CUDA graphs", self.kind, len(self.graphs))
            self.graphs.clear()
            self._overflow.clear()
            self._uncapturable.clear()
            self._addresses = self._parameter_addresses()
        key = _key(flat)
        entry = self.graphs.get(key)
        if entry is None:
            if len(self.graphs) >= self.max_graphs:  # a shape storm: stay correct, run eagerly
                if key not in self._overflow:
                    self._overflow.add(key)
                    held = len(self.graphs)
                    log.info("%s: %d CUDA graphs held, input %s runs eagerly", self.kind, held, key[0])
                return self._core(*args)
            if key in self._uncapturable:
                return self._core(*args)
            try:
                entry = self._capture(flat, spec)
            except torch.cuda.OutOfMemoryError:  # this time only: eager needs less memory
                log.warning("%s: no memory to capture input %s; it runs eagerly", self.kind, key[0])
                return self._core(*args)
            except RuntimeError:  # an op that cannot be captured: this shape stays eager
                log.exception("%s: capture failed for input %s; it runs eagerly", self.kind, key[0])
                self._uncapturable.add(key)
                return self._core(*args)
            self.graphs[key] = entry
        for buffer, x in zip(entry.inputs, (x for x in flat if isinstance(x, torch.Tensor)), strict=True):
            buffer.copy_(x)
        entry.graph.replay()
        self.replays += 1
        return pytree.tree_map(lambda x: x.clone() if isinstance(x, torch.Tensor) else x, entry.outputs)

    def _capture(self, flat: list, spec) -> _Graph:
        """Warm up on a side stream, then capture `_core` on the static inputs."""
        static = [_static_like(x) if isinstance(x, torch.Tensor) else x for x in flat]
        args = pytree.tree_unflatten(static, spec)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARM_UP_RUNS):
                self._core(*args)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        before = torch.cuda.current_stream()
        try:
            # thread_local: CUDA calls of other threads during a capture stay legal
            with torch.cuda.graph(graph, pool=_pool(), capture_error_mode="thread_local"):
                outputs = self._core(*args)
        except BaseException:
            # torch.cuda.graph's exit ends the capture before it restores the stream: when ending
            # fails, this thread would go on on the capture stream
            torch.cuda.set_stream(before)
            raise
        self.captures += 1
        return _Graph(graph, [x for x in static if isinstance(x, torch.Tensor)], outputs)


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
