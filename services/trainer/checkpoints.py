"""Training checkpoints in S3, next to the likeness they belong to.

A retried `train_likeness` job (its worker was killed) finds the last checkpoint here and resumes
from it; the library's `CheckpointStore` protocol (services/trainer/lora.py) is all it needs.
"""

from __future__ import annotations

import re
import uuid

from sqlalchemy import select

from shared import pending_objects, storage
from shared.accounts import hold_account
from shared.db import session_scope
from shared.jobs import JobCanceled
from shared.models import Likeness

_STEP = re.compile(r"step-(\d+)\.pt$")


class S3CheckpointStore:
    """`users/<uid>/likenesses/<likeness_id>/checkpoints/step-<n>.pt`, every one until `clear()`
    (after the export): a resumed training reads the LoRA state of each earlier checkpoint, the
    snapshots its checkpoint choice weighs (lora.CheckpointStore)."""

    def __init__(self, user_id: uuid.UUID | str, likeness_id: uuid.UUID | str):
        self.user_id = uuid.UUID(str(user_id))
        self.likeness_id = uuid.UUID(str(likeness_id))
        self.prefix = storage.user_key(user_id, "likenesses", str(likeness_id), "checkpoints") + "/"

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
        """Store the checkpoint of `step`.

        Announced before the write and settled only while the likeness and the account stand
        (shared/accounts.py), so neither a likeness delete nor an erasure that listed the folder
        before this write leaves it behind: raises JobCanceled then (the object deleted, or left
        to the sweep when S3 fails)."""
        key = self.key(step)
        pending_objects.announce([key])
        # A PUT is atomic in S3: a reader sees the whole object or none, never a torn checkpoint.
        storage.put_bytes(key, state, "application/octet-stream")
        if not self._settle(key):
            pending_objects.delete_now([key])
            raise JobCanceled()

    def _settle(self, key: str) -> bool:
        """Settle `key` while the likeness exists and its account is not being erased; else False."""
        with session_scope() as session:
            if not hold_account(session, self.user_id):
                return False
            found = session.scalar(
                select(Likeness.id).where(Likeness.id == self.likeness_id).with_for_update(read=True)
            )
            if found is None:
                return False
            pending_objects.settle(session, [key])
        return True

    def latest(self) -> tuple[int, bytes] | None:
        saved = self.steps()
        if not saved:
            return None
        step = max(saved)
        return step, storage.get_bytes(saved[step])

    def earlier(self, step: int) -> list[tuple[int, bytes]]:
        """Every checkpoint saved before `step`, in step order."""
        saved = self.steps()
        return [(s, storage.get_bytes(saved[s])) for s in sorted(saved) if s < step]

    def clear(self) -> int:
        """Delete every checkpoint (the likeness is exported; they are no longer needed)."""
        keys = list(self.steps().values())
        storage.delete_keys(keys)
        return len(keys)
