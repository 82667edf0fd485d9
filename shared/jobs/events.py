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
from sqlalchemy.orm import Session, object_session

from shared.config import get_settings
from shared.models import Job


def channel(job_id: uuid.UUID | str) -> str:
    return f"job:{job_id}"


def job_snapshot(job: Job, **extra: Any) -> dict[str, Any]:
    data = {
        "id": str(job.id),
        "kind": job.kind,
        "status": str(job.status),
        "progress": round(job.progress or 0.0, 4),
        "stage": job.stage,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "error_code": job.error_code,
        "error_message": job.error_message,
        "result": job.result,
        "created_at": job.created_at.isoformat() if job.created_at else None,
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }
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
    _send(session.info.pop(_PENDING, []))


@event.listens_for(Session, "after_rollback")
def _drop_rolled_back(session: Session) -> None:
    session.info.pop(_PENDING, None)


def reset_clients() -> None:
    _redis.cache_clear()
