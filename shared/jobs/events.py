"""Progress events: each job change is published on the Redis channel `job:<id>`.

The database row stays the source of truth (a client that connects late reads it first);
the channel only makes changes show up live.
"""

import json
import uuid
from functools import lru_cache
from typing import Any

import redis

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


def publish(job: Job, **extra: Any) -> None:
    try:
        _redis().publish(channel(job.id), json.dumps(job_snapshot(job, **extra), default=str))
    except redis.RedisError:
        pass  # live events are best effort; the row is the truth


def reset_clients() -> None:
    _redis.cache_clear()
