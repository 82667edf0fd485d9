"""Training checkpoints in S3, next to the likeness they belong to.

A retried `train_likeness` job (its worker was killed) finds the last checkpoint here and resumes
from it; the library's `CheckpointStore` protocol (services/trainer/lora.py) is all it needs.
"""

from __future__ import annotations

import re
import uuid

from shared import storage

_STEP = re.compile(r"step-(\d+)\.pt$")


class S3CheckpointStore:
    """`users/<uid>/likenesses/<likeness_id>/checkpoints/step-<n>.pt`; keeps the last `keep`."""

    def __init__(self, user_id: uuid.UUID | str, likeness_id: uuid.UUID | str, keep: int = 2):
        if keep < 1:
            raise ValueError("keep at least one checkpoint")
        self.prefix = storage.user_key(user_id, "likenesses", str(likeness_id), "checkpoints") + "/"
        self.keep = keep

    def key(self, step: int) -> str:
        return f"{self.prefix}step-{step}.pt"

    def steps(self) -> dict[int, str]:
        """Saved steps and their keys (objects that do not look like checkpoints are ignored)."""
        found = {}
        for key in storage.list_keys(self.prefix):
            match = _STEP.search(key.removeprefix(self.prefix))
            if match:
                found[int(match.group(1))] = key
        return found

    def save(self, step: int, state: bytes) -> None:
        # A PUT is atomic in S3: a reader sees the whole object or none, never a torn checkpoint.
        storage.put_bytes(self.key(step), state, "application/octet-stream")
        saved = self.steps()
        stale = sorted(saved)[: -self.keep]
        storage.delete_keys([saved[s] for s in stale])

    def latest(self) -> tuple[int, bytes] | None:
        saved = self.steps()
        if not saved:
            return None
        step = max(saved)
        return step, storage.get_bytes(saved[step])

    def clear(self) -> int:
        """Delete every checkpoint (the likeness is exported; they are no longer needed)."""
        keys = list(self.steps().values())
        storage.delete_keys(keys)
        return len(keys)
