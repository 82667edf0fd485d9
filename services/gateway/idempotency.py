"""Idempotency-Key replays (IETF draft-ietf-httpapi-idempotency-key-header): a request sent again
with the same key gets the answer of the first, built from the job the first one created.

One helper for every route that takes the header: `replay(...)` finds that job and its typed
input, or says the request is new; a key used for another request is a 409 (IdempotencyConflict,
answered in app.py).
"""

import uuid
from dataclasses import dataclass
from typing import Generic

from sqlalchemy.orm import Session

from shared.contracts.base import InputT
from shared.jobs import IdempotencyConflict
from shared.jobs.outbox import find_by_idempotency_key, lock_idempotency_key
from shared.models import Job


@dataclass(frozen=True)
class Replay(Generic[InputT]):
    job: Job  # the job the first request created
    input: InputT  # its input, as its kind's contract reads it


def replay(
    session: Session,
    user_id: uuid.UUID,
    key: str | None,
    input_type: type[InputT],
    fingerprint: str,
) -> Replay[InputT] | None:
    """The first answer's job for a request retried with Idempotency-Key `key`, or None for a new
    request (or no key). `fingerprint` is this request's `request_fingerprint(...)`: it must equal
    the one stored with the first (the input's `fingerprint` field where its contract has one, for
    requests whose job input holds fresh ids; else the job's `request_hash`), or IdempotencyConflict
    is raised. Takes the key's transaction lock first, so a retry sent while the first request is
    still in flight waits for it and finds its job."""
    if not key:
        return None
    lock_idempotency_key(session, user_id, key)
    job = find_by_idempotency_key(session, user_id, key)
    if job is None:
        return None
    if job.kind != input_type.kind:
        raise IdempotencyConflict()
    first = input_type.model_validate(job.input)
    stored = getattr(first, "fingerprint", None) or job.request_hash
    if stored != fingerprint:
        raise IdempotencyConflict()
    return Replay(job, first)
