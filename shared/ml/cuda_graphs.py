"""CUDA graphs of a network's forward, captured per input shape and replayed: the launch overhead
of an eager forward gone without a compiler (issue 21).

Why: at small batches an eager SD-1.5 UNet is bound by Python and kernel launches, not by the
GPU (a denoising step at 2-6 rows spends most of its time launching a thousand small kernels);
a CUDA graph replays all of a forward's kernels with one launch. Capturing costs about three
eager forwards; torch.compile's "reduce-overhead" does the same after minutes of compiling.

`ShapeGraphs(fn, module)` calls `fn(*args)` (tensors, nested in tuples, and None) through one
`torch.cuda.CUDAGraph` per distinct set of input shapes, dtypes, strides and devices:
- the first call of a set warms up on a side stream and captures `fn` on static copies of the
  inputs; every call copies its tensors into those static inputs, replays, and returns clones of
  the static outputs (the next replay overwrites them; schedulers keep model outputs between
  steps);
- all live graphs of the process share one memory pool: they replay one after another on one
  stream, and each graph's static outputs stay referenced, so no capture reuses another's
  outputs (once none is left, the next capture starts a new pool: see `_pool`);
- a graph reads `module`'s parameters at the addresses they had at capture: values written in
  place (baked LoRAs, `load_state_dict`) are seen; if a parameter's storage changes (a `.to()`,
  a new adapter), every graph is dropped and captured again, never replayed against freed memory;
- a set that cannot be captured (an op that synchronizes) runs `fn` eagerly from then on, and so
  does any new set once `max_graphs` are held.
Callers keep autograd off: `ShapeGraphs` is for inference.

Source: PyTorch's "CUDA Graphs" notes (torch.cuda.graph, side-stream warm-up before capture,
sharing a memory pool between captures), https://pytorch.org/docs/stable/notes/cuda.html
"""

from __future__ import annotations

import contextlib
import logging
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch.utils import _pytree as pytree

log = logging.getLogger(__name__)

MAX_GRAPHS = 48  # per network: a few spatial sizes x the batch sizes a job uses
WARM_UP_RUNS = 2  # eager runs on a side stream before a capture (cuDNN plans, the allocator)

_state = threading.local()


@contextlib.contextmanager
def eager() -> Iterator[None]:
    """Within this block (on this thread) callers of `graphs_wanted` run eagerly: the reference
    for the same-pictures checks."""
    before = getattr(_state, "eager", False)
    _state.eager = True
    try:
        yield
    finally:
        _state.eager = before


def graphs_wanted(sample: torch.Tensor) -> bool:
    """Whether a call with this input may replay a graph: CUDA, autograd off, not in `eager()`."""
    forced = getattr(_state, "eager", False)
    return sample.device.type == "cuda" and not torch.is_grad_enabled() and not forced


def timestep_rows(timestep, rows: int, device: torch.device) -> torch.Tensor:
    """The timestep as a float32 vector of `rows` values on `device` (a UNet broadcasts a scalar
    timestep the same way, and its sinusoidal projection works in float32 anyway)."""
    t = torch.as_tensor(timestep, device=device).to(torch.float32).reshape(-1)
    if t.numel() == 1:
        return t.expand(rows).contiguous()
    return t.contiguous()


_users: weakref.WeakSet[ShapeGraphs] = weakref.WeakSet()  # every ShapeGraphs of the process
_handle: tuple | None = None


def _pool() -> tuple:
    """The memory pool the live graphs of the process share, new when none of them is left:
    PyTorch frees a pool once its graphs are gone, and a capture into the freed pool's handle
    fails an allocator assertion (`use_count > 0`, CUDACachingAllocator.cpp, torch 2.11). That
    was every capture of a process's second pipeline: the trainer's next job, a test's next one.
    Graphs that are unreachable but not yet collected (a reference cycle) count as live here, so
    owners drop theirs with `ShapeGraphs.close` when they are done."""
    global _handle
    if _handle is None or not any(user.graphs for user in _users):
        _handle = torch.cuda.graph_pool_handle()
    return _handle


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


class ShapeGraphs:
    """`fn` replayed from CUDA graphs, one per input shape set (see the module docstring).
    `module`: whose parameters the graphs read (their addresses are checked on every call).
    Counters: `captures` (recaptures included), `replays`."""

    def __init__(self, fn: Callable, module: torch.nn.Module, name: str, max_graphs: int = MAX_GRAPHS):
        self.fn = fn
        self.module = module
        self.name = name
        self.max_graphs = max_graphs
        self.graphs: dict[tuple, _Graph] = {}
        self.captures = 0
        self.replays = 0
        self._eager_keys: set[tuple] = set()  # uncapturable, or beyond max_graphs
        self._addresses = self._parameter_addresses()
        _users.add(self)

    def close(self) -> None:
        """Drop every graph now (their memory goes back to the pool). `fn` is often a bound method
        of an object that holds this one, a reference cycle that would keep the graphs alive until
        the cycle collector runs; calls after this capture anew."""
        self.graphs.clear()
        self._eager_keys.clear()

    def _parameter_addresses(self) -> list[int]:
        return [p.data_ptr() for p in self.module.parameters()]

    def __call__(self, *args):
        """`fn(*args)`, from a graph (captured now if this shape set is new) or eagerly."""
        flat, spec = pytree.tree_flatten(args)
        if self._parameter_addresses() != self._addresses:
            log.warning("%s parameters moved: dropping %d CUDA graphs", self.name, len(self.graphs))
            self.graphs.clear()
            self._eager_keys.clear()
            self._addresses = self._parameter_addresses()
        key = _key(flat)
        entry = self.graphs.get(key)
        if entry is None:
            if key in self._eager_keys:
                return self.fn(*args)
            if len(self.graphs) >= self.max_graphs:  # a shape storm: stay correct, run eagerly
                log.info("%s: %d CUDA graphs held, input %s runs eagerly", self.name, self.max_graphs, key[0])
                self._eager_keys.add(key)
                return self.fn(*args)
            try:
                entry = self._capture(flat, spec)
            except torch.cuda.OutOfMemoryError:  # this time only: eager needs less memory
                log.warning("%s: no memory to capture input %s; it runs eagerly", self.name, key[0])
                return self.fn(*args)
            except RuntimeError:  # an op that cannot be captured: this shape stays eager
                log.exception("%s: capture failed for input %s; it runs eagerly", self.name, key[0])
                self._eager_keys.add(key)
                return self.fn(*args)
            self.graphs[key] = entry
        for buffer, x in zip(entry.inputs, (x for x in flat if isinstance(x, torch.Tensor)), strict=True):
            buffer.copy_(x)
        entry.graph.replay()
        self.replays += 1
        return pytree.tree_map(lambda x: x.clone() if isinstance(x, torch.Tensor) else x, entry.outputs)

    def _capture(self, flat: list, spec) -> _Graph:
        """Warm up on a side stream, then capture `fn` on the static inputs."""
        static = [_static_like(x) if isinstance(x, torch.Tensor) else x for x in flat]
        args = pytree.tree_unflatten(static, spec)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(WARM_UP_RUNS):
                self.fn(*args)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        before = torch.cuda.current_stream()
        try:
            # thread_local: CUDA calls of other threads during a capture stay legal
            with torch.cuda.graph(graph, pool=_pool(), capture_error_mode="thread_local"):
                outputs = self.fn(*args)
        except BaseException:
            # torch.cuda.graph's exit ends the capture before it restores the stream: when ending
            # fails, this thread would go on on the capture stream
            torch.cuda.set_stream(before)
            raise
        self.captures += 1
        return _Graph(graph, [x for x in static if isinstance(x, torch.Tensor)], outputs)


class GraphedUNet:
    """A UNet2DConditionModel's forward for plain text-to-image calls (sample, timestep,
    encoder_hidden_states; no ControlNet residuals, no cross-attention kwargs) replayed from
    `ShapeGraphs`; any other call, and any call `graphs_wanted` refuses, runs the eager forward.
    Install with `graphed_unet`."""

    _NEUTRAL = {"timestep_cond": None, "cross_attention_kwargs": None, "added_cond_kwargs": None,
                "down_block_additional_residuals": None, "mid_block_additional_residual": None,
                "down_intrablock_additional_residuals": None, "encoder_attention_mask": None,
                "attention_mask": None, "class_labels": None}  # fmt: skip

    def __init__(self, unet: torch.nn.Module, max_graphs: int = MAX_GRAPHS):
        self.eager = unet.forward  # the class's forward, or one installed on the instance before
        self.graphs = ShapeGraphs(self._core, unet, "unet", max_graphs)

    def _core(self, sample, timestep, hidden):
        return self.eager(sample, timestep, hidden, return_dict=False)

    def __call__(self, sample, timestep, encoder_hidden_states=None, *args, **kwargs):
        return_dict = kwargs.pop("return_dict", True)
        plain = (
            not args
            and encoder_hidden_states is not None
            and all(key in self._NEUTRAL and value is self._NEUTRAL[key] for key, value in kwargs.items())
        )
        if not (plain and graphs_wanted(sample)):
            kwargs["return_dict"] = return_dict
            return self.eager(sample, timestep, encoder_hidden_states, *args, **kwargs)
        t = timestep_rows(timestep, sample.shape[0], sample.device)
        (out,) = self.graphs(sample.contiguous(), t, encoder_hidden_states.contiguous())
        if return_dict:
            from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

            return UNet2DConditionOutput(sample=out)
        return (out,)


@contextlib.contextmanager
def graphed_unet(unet: torch.nn.Module, max_graphs: int = MAX_GRAPHS) -> Iterator[GraphedUNet | None]:
    """Within this block the UNet's plain calls replay CUDA graphs (`GraphedUNet`); yields it, or
    None (and changes nothing) when the UNet is not on CUDA. The graphs and their memory go when
    the block ends (dropped there, not left to the cycle collector: `_pool` must not see them)."""
    if next(unet.parameters()).device.type != "cuda":
        yield None
        return
    installed = "forward" in vars(unet)
    previous = unet.forward
    graphed = unet.forward = GraphedUNet(unet, max_graphs)
    try:
        yield graphed
    finally:
        graphed.graphs.close()
        if installed:
            unet.forward = previous
        else:
            del unet.forward
