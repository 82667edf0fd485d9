"""What the benchmarks print besides seconds, so a slow path cannot hide: the dtype every network
really ran in (forward pre-hooks, not a look at the weights after loading), the share of wall time
the GPU was busy (torch profiler), the top GPU kernels, and the peak GPU memory."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager

import torch


@contextmanager
def dtypes_seen(nets: Mapping[str, torch.nn.Module | None]) -> Iterator[dict[str, list[str]]]:
    """Yields {network: [dtypes of its weights each time its forward ran]}, filled while inside."""
    seen: dict[str, set[str]] = {}

    def record(name: str):
        def hook(module, args) -> None:
            param = next(module.parameters(), None)
            if param is not None:
                seen.setdefault(name, set()).add(str(param.dtype).removeprefix("torch."))

        return hook

    hooks = [net.register_forward_pre_hook(record(name)) for name, net in nets.items() if net is not None]
    out: dict[str, list[str]] = {}
    try:
        yield out
    finally:
        for hook in hooks:
            hook.remove()
        out.update({name: sorted(dtypes) for name, dtypes in sorted(seen.items())})


def gpu_busy(fn: Callable[[], object], top: int = 8) -> dict:
    """Run `fn` under the torch profiler: wall seconds, the share of it with a GPU kernel running
    (union of kernel intervals / wall), and the kernels that took the most GPU time."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        wall = time.perf_counter() - start
    intervals = sorted(
        (e.time_range.start, e.time_range.end)
        for e in prof.events()
        if e.device_type == torch.autograd.DeviceType.CUDA and e.time_range.end > e.time_range.start
    )
    busy_us, end = 0.0, float("-inf")
    for a, b in intervals:
        if b > end:
            busy_us += b - max(a, end)
            end = b
    kernels: dict[str, float] = {}
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            kernels[e.name] = kernels.get(e.name, 0.0) + (e.time_range.end - e.time_range.start)
    total = sum(kernels.values()) or 1.0
    # the aten operators whose kernels took the GPU time (aten::copy_ = layout or dtype copies)
    ops = {
        a.key: getattr(a, "self_device_time_total", 0.0) or getattr(a, "self_cuda_time_total", 0.0)
        for a in prof.key_averages()
    }
    ops_total = sum(ops.values()) or 1.0
    return {
        "wall_seconds": round(wall, 3),
        "gpu_busy_share": round(busy_us / 1e6 / wall, 3),
        "top_kernels": [
            {"name": name[:200], "share": round(t / total, 3)}
            for name, t in sorted(kernels.items(), key=lambda kv: -kv[1])[:top]
        ],
        "top_ops": [
            {"op": key, "share": round(t / ops_total, 3)}
            for key, t in sorted(ops.items(), key=lambda kv: -kv[1])[:top]
            if t > 0
        ],
    }


def peak_memory_gib() -> float:
    """Peak GPU memory allocated by this process since the last reset, GiB."""
    return round(torch.cuda.max_memory_allocated() / 2**30, 2)
