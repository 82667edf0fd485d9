"""Enqueueing through a transactional outbox, and the relay that publishes it to Celery.

The job row and its outbox row commit together; the relay publishes afterwards and marks the row sent.
A crash between commit and publish loses nothing (the row is still unsent); a crash between publish and
mark publishes twice, which the runner's compare-and-set claim turns into a no-op.
"""

import hashlib
import json
import logging
import time
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import func, or_, select, text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from shared.config import get_settings
from shared.contracts import ErrorCode, JobInput, SendEmail, get_kind, kind_of
from shared.db import lock_not_available
from shared.jobs.celery_app import celery_app
from shared.jobs.state import now
from shared.models import Job, OutboxMessage

log = logging.getLogger(__name__)


class IdempotencyConflict(Exception):
    """The Idempotency-Key was already used for a different request."""

    def __init__(
        self, message: str = "This Idempotency-Key was already used for a different request; use a new key."
    ):
        super().__init__(message)


class IdempotencyInProgress(Exception):
    """A request with this Idempotency-Key is still in progress: the first attempt holds the key for
    longer than the database's `lock_timeout` (an upload while storage is slow). The gateway answers
    409 with `Retry-After`; the retry then gets the first attempt's answer."""

    def __init__(
        self, message: str = "A request with this Idempotency-Key is still in progress; try again shortly."
    ):
        super().__init__(message)


def request_fingerprint(kind: str, payload: Any) -> str:
    """sha256 (hex) of a request's kind and payload: an Idempotency-Key replay must match it."""
    blob = json.dumps({"kind": kind, "payload": payload}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def add_outbox(session: Session, job: Job, *, not_before: datetime | None = None) -> None:
    """Add the outbox row that publishes `job`'s task: at the relay's next pass, or from
    `not_before` on (a retry's backoff)."""
    kind = get_kind(job.kind)
    session.add(
        OutboxMessage(
            job_id=job.id,
            task_name=kind.task_name,
            queue=kind.queue,
            payload={"job_id": str(job.id)},
            available_at=not_before,
        )
    )


def enqueue(
    session: Session,
    job_input: JobInput,
    *,
    user_id: uuid.UUID | None,
    idempotency_key: str | None = None,
    max_attempts: int | None = None,
) -> Job:
    """Add a queued job of `job_input`'s kind and its outbox row to the session; the caller commits
    both together. `enqueue(session, GeneratePortraits(...), user_id=...)`.

    With an idempotency key, a repeated request returns the job created the first time (raises
    IdempotencyConflict when the key was used for another request).
    """
    job_kind = kind_of(job_input)
    kind, input = job_kind.name, job_input.to_row()
    fingerprint = request_fingerprint(kind, input) if idempotency_key else None
    if idempotency_key:
        existing = find_by_idempotency_key(session, user_id, idempotency_key)
        if existing is not None:
            return _same_request_or_conflict(existing, fingerprint)
    job = Job(
        id=uuid.uuid4(),
        user_id=user_id,
        kind=kind,
        input=input,
        idempotency_key=idempotency_key,
        request_hash=fingerprint,
        max_attempts=max_attempts or job_kind.max_attempts or get_settings().job_max_attempts,
    )
    try:
        with session.begin_nested():  # a concurrent twin may win the unique index
            session.add(job)
            session.flush()
    except OperationalError as e:  # the twin's insert holds the index entry past lock_timeout
        if idempotency_key and lock_not_available(e):
            raise IdempotencyInProgress() from e
        raise
    except IntegrityError:
        existing = find_by_idempotency_key(session, user_id, idempotency_key or "")
        if existing is None:
            raise
        return _same_request_or_conflict(existing, fingerprint)
    add_outbox(session, job)
    return job


def lock_idempotency_key(session: Session, user_id: uuid.UUID | None, key: str) -> None:
    """Serialise requests that share one Idempotency-Key until this transaction ends.

    A retry sent while the first attempt is still in flight then waits for it and finds its job (the
    same answer), instead of racing it to the unique index with other row ids in its input and being
    told the key was used for a different request. A Postgres transaction-level advisory lock on the
    hash of (user, key): released by commit or rollback; other keys do not wait.

    The wait is brief: past the database's `lock_timeout` (`database_lock_timeout_ms`, 1 s) the first
    attempt is still busy (storage slow or hung) and this raises `IdempotencyInProgress` (409).
    """
    try:
        session.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:lock, 0))"),
            {"lock": idempotency_lock_name(user_id, key)},
        )
    except OperationalError as e:
        if lock_not_available(e):
            raise IdempotencyInProgress() from e
        raise


def idempotency_lock_name(user_id: uuid.UUID | None, key: str) -> str:
    """The text whose `hashtextextended` names the advisory lock of one user's key."""
    return f"idempotency:{user_id}:{key}"


def find_by_idempotency_key(session: Session, user_id: uuid.UUID | None, key: str) -> Job | None:
    """The user's job created with Idempotency-Key `key`, if any."""
    return session.scalar(select(Job).where(Job.user_id == user_id, Job.idempotency_key == key))


def _same_request_or_conflict(job: Job, fingerprint: str | None) -> Job:
    if job.request_hash != fingerprint:
        raise IdempotencyConflict()
    return job


Publish = Callable[[str, str, dict[str, Any]], None]


def relay_once(session: Session, publish: Publish, batch: int = 100) -> int:
    """Publish unsent outbox rows that are due (`available_at` passed, by the database's clock;
    locked, so several relays can run) and mark them sent."""
    due = or_(OutboxMessage.available_at.is_(None), OutboxMessage.available_at <= func.now())
    rows = session.scalars(
        select(OutboxMessage)
        .where(OutboxMessage.sent_at.is_(None), due)
        .order_by(OutboxMessage.id)
        .limit(batch)
        .with_for_update(skip_locked=True)
    ).all()
    for row in rows:
        publish(row.task_name, row.queue, row.payload)
        row.sent_at = now()
    session.commit()
    return len(rows)


def celery_publisher() -> Publish:
    """Sends an outbox row's task to its Celery queue."""

    def publish(task_name: str, queue: str, payload: dict[str, Any]) -> None:
        celery_app.send_task(task_name, kwargs=payload, queue=queue)

    return publish


def run_relay(stop: Callable[[], bool] = lambda: False) -> None:
    """The relay process: publish unsent outbox rows until `stop()` says so."""
    from shared.db import get_sessionmaker

    settings = get_settings()
    publish = celery_publisher()
    log.info("outbox relay started")
    while not stop():
        try:
            with get_sessionmaker()() as session:
                sent = relay_once(session, publish)
            if sent:
                log.info("relayed %d outbox messages", sent)
                continue
        except Exception:
            log.exception("relay pass failed; retrying")
        time.sleep(settings.relay_poll_seconds)


# Failures the user caused themself (deleting the likeness a job needed): the answer says why, and
# a "something went wrong, we are looking into it" mail would be false.
USER_CAUSED = frozenset({ErrorCode.likeness_deleted})


def mail_failure(session: Session, job: Job) -> None:
    """A job the user waits for finally failed: tell them by email what happened and what to do
    (not for USER_CAUSED codes)."""
    if get_kind(job.kind).mail_on_failure and job.user_id is not None and job.error_code not in USER_CAUSED:
        enqueue(session, SendEmail.job_failed(job.id), user_id=job.user_id)
