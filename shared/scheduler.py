"""The scheduler process: reaps stale jobs, schedules the retention sweep, samples queue depths."""

import logging
import time
from datetime import UTC, datetime

import redis
from sqlalchemy import func, select

from shared.config import get_settings
from shared.contracts import QUEUES, SweepRetention
from shared.db import get_sessionmaker, session_scope
from shared.jobs import enqueue
from shared.jobs.reaper import reap_stale_jobs
from shared.metrics import OUTBOX_PENDING, QUEUE_DEPTH
from shared.models import OutboxMessage

log = logging.getLogger(__name__)


def schedule_retention_sweep(now: datetime) -> None:
    """One sweep per hour: the idempotency key makes every scheduler replica agree."""
    with session_scope() as session:
        enqueue(session, SweepRetention(), user_id=None, idempotency_key=f"retention:{now:%Y-%m-%dT%H}")


def sample_queues(client: redis.Redis) -> None:
    for queue in QUEUES:
        QUEUE_DEPTH.labels(queue).set(client.llen(queue))  # Celery's Redis queues are lists
    with get_sessionmaker()() as session:
        OUTBOX_PENDING.set(
            session.scalar(
                select(func.count()).select_from(OutboxMessage).where(OutboxMessage.sent_at.is_(None))
            )
            or 0
        )


def run_scheduler(stop=lambda: False) -> None:
    s = get_settings()
    client = redis.Redis.from_url(s.redis_url, **s.redis_options())
    log.info("scheduler started")
    swept_hour = None  # the hour whose sweep this process already enqueued
    while not stop():
        try:
            with get_sessionmaker()() as session:
                reap_stale_jobs(session)
            hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
            if hour != swept_hour:
                schedule_retention_sweep(hour)
                swept_hour = hour
            sample_queues(client)
        except Exception:
            log.exception("scheduler pass failed; retrying")
        time.sleep(s.reaper_interval_seconds)
