"""The dtype guard: resident networks keep the dtype and device they were loaded in.

Why it exists: diffusers' `Pipeline.from_pipe` defaults its dtype to float32 and calls `.to(dtype)`
on the modules it shares with the base pipeline, so building one derived pipeline once turned every
resident network of a GPU worker to float32 (2.3x slower, and nothing failed). Workers take a
snapshot of their networks' placement after loading and check it again after building their stage
pipelines and after every job; a drift raises `DtypeDrift`, which names the network.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch


class DtypeDrift(RuntimeError):
    """A resident network is no longer in the dtype or on the device it was loaded in."""


@dataclass(frozen=True)
class Placement:
    """The dtypes and devices of a network's floating-point parameters (sorted, as strings)."""

    dtypes: tuple[str, ...]
    devices: tuple[str, ...]

    def __str__(self) -> str:
        return f"{'/'.join(self.dtypes)} on {'/'.join(self.devices)}"


def placement(net: torch.nn.Module) -> Placement:
    """Placement of `net`: integer buffers (position ids, step counters) are not counted."""
    params = [p for p in net.parameters() if p.is_floating_point()]
    return Placement(
        dtypes=tuple(sorted({str(p.dtype).removeprefix("torch.") for p in params})),
        devices=tuple(sorted({str(p.device) for p in params})),
    )


def snapshot(nets: Mapping[str, torch.nn.Module | None]) -> dict[str, Placement]:
    """Placement of every network present (None entries, e.g. a missing ControlNet, are skipped)."""
    return {name: placement(net) for name, net in nets.items() if net is not None}


def check(expected: Mapping[str, Placement], nets: Mapping[str, torch.nn.Module | None], when: str) -> None:
    """Raise `DtypeDrift` if a network's placement differs from `expected`.

    `when` completes the sentence "... changed <when>", e.g. "after the job".
    """
    now = snapshot(nets)
    drifted = [
        f"{name}: {expected[name]} -> {now.get(name)}" for name in expected if now.get(name) != expected[name]
    ]
    if drifted:
        raise DtypeDrift(
            f"resident networks changed dtype or device {when} ({'; '.join(drifted)}); "
            "this worker stops: its models are no longer what it loaded"
        )


def check_loaded_in(nets: Mapping[str, torch.nn.Module | None], dtype: torch.dtype, when: str) -> None:
    """Raise `DtypeDrift` unless every network's parameters are all of `dtype` (the load dtype)."""
    want = Placement(dtypes=(str(dtype).removeprefix("torch."),), devices=())
    wrong = [f"{name}: {p}" for name, p in snapshot(nets).items() if p.dtypes and p.dtypes != want.dtypes]
    if wrong:
        raise DtypeDrift(
            f"resident networks are not in the {want.dtypes[0]} they were loaded in {when} "
            f"({'; '.join(wrong)}); the worker refuses to start"
        )
