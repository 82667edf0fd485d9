"""The reaper: a job whose heartbeat went stale lost its worker (killed, evicted, out of memory).

It goes back to the queue for another attempt, or fails with a clear reason once it used them all.
"""

import logging
from datetime import timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared import i18n
from shared.config import get_settings
from shared.contracts import ErrorCode
from shared.jobs import events
from shared.jobs.retry import retry_or_fail
from shared.models import Job, JobStatus

log = logging.getLogger(__name__)


def reap_stale_jobs(session: Session) -> list[Job]:
    """Hand back (or fail) every running job whose heartbeat is older than JOB_STALE_SECONDS;
    commits, publishes the changes and returns the changed jobs."""
    # The database's clock, the one heartbeats are written with (no skew between hosts).
    stale_before = func.now() - timedelta(seconds=get_settings().job_stale_seconds)
    stale = session.scalars(
        select(Job)
        .where(Job.status == JobStatus.running, Job.heartbeat_at < stale_before)
        .with_for_update(skip_locked=True)
    ).all()
    changed = []
    for job in stale:
        moved = hand_back(session, job, claimed_by=job.worker)
        if moved:
            log.warning("reaped stale job", extra={"job_id": str(job.id), "status": str(moved.status)})
            changed.append(moved)
    session.commit()
    for job in changed:
        events.publish(job)
    return changed


def hand_back(session: Session, job: Job, *, claimed_by: str | None) -> Job | None:
    """A running job that lost its worker: back to the queue while attempts remain, else failed
    (code `worker_lost`). None if another process changed it first (see `retry_or_fail`)."""
    return retry_or_fail(
        session,
        job,
        claimed_by=claimed_by,
        code="worker_lost",
        retry_message=f"Attempt {job.attempts} lost its worker; retrying.",
        final_message=i18n.say(f"job.{ErrorCode.worker_lost}", attempts=job.attempts),
    )
