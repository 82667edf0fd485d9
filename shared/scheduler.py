"""The scheduler process: reaps stale jobs, finishes what failed attempts left (objects of deleted
rows, erasures), schedules the retention sweep, samples queue depths."""

import logging
import time
from datetime import UTC, datetime

import redis
from sqlalchemy import exists, func, select, text

from shared import pending_objects
from shared.config import get_settings
from shared.contracts import QUEUES, EraseUser, SweepRetention
from shared.db import get_sessionmaker, session_scope
from shared.jobs import enqueue
from shared.jobs.reaper import reap_stale_jobs
from shared.metrics import OUTBOX_PENDING, QUEUE_DEPTH
from shared.models import Job, JobStatus, OutboxMessage, User

log = logging.getLogger(__name__)


def schedule_retention_sweep(now: datetime) -> None:
    """One sweep per hour: the idempotency key makes every scheduler replica agree."""
    with session_scope() as session:
        enqueue(session, SweepRetention(), user_id=None, idempotency_key=f"retention:{now:%Y-%m-%dT%H}")


def resume_erasures() -> int:
    """Start erasure again for accounts marked `deleting` whose `erase_user` job ended without
    erasing them (failed after its last attempt, or canceled): a new job, at most one at a time
    per account. The erasure the user asked for always completes. Returns how many were started."""
    with session_scope() as session:
        active = exists().where(
            Job.user_id == User.id,
            Job.kind == "erase_user",
            Job.status.in_([JobStatus.queued, JobStatus.running]),
        )
        users = session.scalars(
            select(User.id).where(User.deleting, ~active).with_for_update(skip_locked=True).limit(100)
        ).all()
        for user_id in users:
            tries = (
                session.scalar(select(func.count()).where(Job.user_id == user_id, Job.kind == "erase_user"))
                or 0
            )
            enqueue(session, EraseUser(), user_id=user_id, idempotency_key=f"erase:{user_id}:{tries}")
            log.warning("erasure of an account resumed (try %d)", tries + 1, extra={"user_id": str(user_id)})
    return len(users)


def clean_up() -> None:
    """Finish what failed attempts left: objects of deleted rows whose S3 delete failed (and
    orphans past their grace, shared/pending_objects.py), then erasures. Each part on its own, so an
    S3 outage does not hold back the erasures (which wait for S3 in their own jobs)."""
    try:
        if deleted := pending_objects.sweep(get_settings().pending_object_grace_seconds):
            log.info("deleted %d objects of deleted rows or dead writers", deleted)
    except Exception as e:  # storage down: the keys stay listed for the next pass
        log.warning("object clean-up failed (%s); retrying later", type(e).__name__)
    resume_erasures()


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


class DatabaseWatch:
    """How long the database has answered this process without a break.

    A heartbeat that went stale while the database itself was away (a pause, a restart) says
    nothing about the worker: the reaper waits until the database has answered for JOB_STALE_SECONDS
    again, so live workers get to beat first and no running job loses an attempt to an outage.
    """

    def __init__(self) -> None:
        self.up_since: float | None = None

    def check(self) -> bool:
        """Ask the database (raises its error); True once it has answered for a whole stale window."""
        try:
            with get_sessionmaker()() as session:
                session.execute(text("SELECT 1"))
        except Exception:
            self.up_since = None
            raise
        if self.up_since is None:
            self.up_since = time.monotonic()
        return time.monotonic() - self.up_since >= get_settings().job_stale_seconds


def run_scheduler(stop=lambda: False) -> None:
    s = get_settings()
    client = redis.Redis.from_url(s.redis_url, **s.redis_options())
    log.info("scheduler started")
    swept_hour = None  # the hour whose sweep this process already enqueued
    cleaned_at = 0.0
    database = DatabaseWatch()
    while not stop():
        try:
            if database.check():
                with get_sessionmaker()() as session:
                    reap_stale_jobs(session)
            hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
            if hour != swept_hour:
                schedule_retention_sweep(hour)
                swept_hour = hour
            if time.monotonic() - cleaned_at >= s.cleanup_interval_seconds:
                cleaned_at = time.monotonic()
                clean_up()
            sample_queues(client)
        except Exception:
            log.exception("scheduler pass failed; retrying")
        time.sleep(s.reaper_interval_seconds)
