"""Every job kind, built from the contract modules: the one list of kinds (ARCHITECTURE.md's
table is checked against it by a test)."""

from __future__ import annotations

import enum
from typing import Any

from shared.contracts import (
    erase_user,
    generate_portraits,
    photo_check,
    pose_extract,
    retention_sweep,
    send_email,
    train_likeness,
)
from shared.contracts.base import QUEUES, JobInput, JobKind

AnyKind = JobKind[Any, Any]

KINDS: dict[str, AnyKind] = {
    module.KIND.name: module.KIND
    for module in (
        photo_check,
        erase_user,
        retention_sweep,
        pose_extract,
        train_likeness,
        generate_portraits,
        send_email,
    )
}
_BY_INPUT: dict[type[JobInput], AnyKind] = {k.input: k for k in KINDS.values()}

# The kinds as a closed set, for APIs that take a kind (an unknown one is a 422, not a query).
JobKindName = enum.StrEnum("JobKindName", {k: k for k in KINDS})  # type: ignore[misc]

__all__ = ["KINDS", "QUEUES", "JobKindName", "get_kind", "kind_of"]


def get_kind(name: str) -> AnyKind:
    """The kind named `name` (`Job.kind`); raises ValueError for an unknown one."""
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"unknown job kind {name!r}; known: {', '.join(KINDS)}") from None


def kind_of(job_input: JobInput) -> AnyKind:
    """The kind whose input `job_input` is."""
    return _BY_INPUT[type(job_input)]
