"""Progress events: each job change is published on the Redis channel `job:<id>`.

The database row stays the source of truth (a client that connects late reads it first);
the channel only makes changes show up live. An event goes out once the transaction that made the
change commits: a page that hears "succeeded" and asks for the portraits must find them.
"""

import json
import uuid
from functools import lru_cache
from typing import Any

import redis
from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction, object_session

from shared.config import get_settings
from shared.models import Job


def channel(job_id: uuid.UUID | str) -> str:
    return f"job:{job_id}"


def job_values(job: Job) -> dict[str, Any]:
    """What a job shows of itself, to the event stream (`job_snapshot`) and the API (the gateway's
    `JobOut.of`), as the row holds it: `id` a UUID, the `*_at` times datetimes or None, `status` its
    string, `progress` 0..1 rounded to 4 places (0.0 when unset). `job`: a Job, or a row with its
    columns as attributes. Plain attribute reads: the gateway builds its most polled answer from it."""
    return {
        "id": job.id,
        "kind": job.kind,
        "status": str(job.status),
        "progress": round(job.progress or 0.0, 4),
        "stage": job.stage,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "error_code": job.error_code,
        "error_message": job.error_message,
        "result": job.result,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
    }


_TIMES = ("created_at", "started_at", "finished_at")


def job_snapshot(job: Job, **extra: Any) -> dict[str, Any]:
    """`job_values` as JSON values (`id` a string, the times ISO 8601 strings or None), with `extra`,
    if any, as its `detail`."""
    data = job_values(job)
    data["id"] = str(data["id"])
    for name in _TIMES:
        data[name] = data[name].isoformat() if data[name] else None
    if extra:
        data["detail"] = extra
    return data


@lru_cache
def _redis() -> redis.Redis:
    s = get_settings()
    return redis.Redis.from_url(s.redis_url, **s.redis_options())


# Session.info key: the events of a transaction not yet committed, as (channel, message).
_PENDING = "job_events"


def publish(job: Job, **extra: Any) -> None:
    """Publish `job`'s snapshot as it is now (plus `extra` as its `detail`) on `job:<id>`.

    While `job` belongs to a session inside a transaction, the message waits for that transaction's
    commit and is dropped if it rolls back: a subscriber never hears of a state that the database
    does not hold yet (or ever). Otherwise it is sent at once. Best effort: Redis errors are ignored."""
    message = (channel(job.id), json.dumps(job_snapshot(job, **extra), default=str))
    session = object_session(job)
    if session is not None and session.in_transaction():
        session.info.setdefault(_PENDING, []).append(message)
    else:
        _send([message])


def _send(messages: list[tuple[str, str]]) -> None:
    try:
        for name, message in messages:
            _redis().publish(name, message)
    except redis.RedisError:
        pass  # live events are best effort; the row is the truth


@event.listens_for(Session, "after_commit")
def _send_committed(session: Session) -> None:
    if session.in_nested_transaction():  # a savepoint released (enqueue uses one): not committed yet
        return
    _send(session.info.pop(_PENDING, []))


@event.listens_for(Session, "after_transaction_end")
def _drop_uncommitted(session: Session, transaction: SessionTransaction) -> None:
    # After a commit (its events already sent), a rollback, or a close without either.
    if transaction.parent is None:
        session.info.pop(_PENDING, None)


def reset_clients() -> None:
    _redis.cache_clear()
