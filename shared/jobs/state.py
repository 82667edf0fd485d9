"""The job state machine: the only place that changes a job's status.

Each change is one conditional UPDATE (compare-and-set on the current status), so two processes racing
on the same job cannot both win: a duplicate delivery, a late heartbeat or a cancel all resolve here.
"""

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from shared.jobs.ended import settle_subjects
from shared.models import Job, JobStatus

Q, R, S, F, C = (
    JobStatus.queued,
    JobStatus.running,
    JobStatus.succeeded,
    JobStatus.failed,
    JobStatus.canceled,
)

ALLOWED: dict[JobStatus, set[JobStatus]] = {
    Q: {R, F, C},  # claimed; failed by the reaper/poison guard; canceled before it ran
    R: {S, F, C, Q, R},  # finished; canceled; handed back; taken over from a dead worker
    S: set(),
    F: set(),
    C: set(),
}


class InvalidTransition(Exception):
    pass


def now() -> datetime:
    return datetime.now(UTC)


def transition(
    session: Session,
    job_id: uuid.UUID,
    from_: JobStatus | set[JobStatus],
    to: JobStatus,
    *,
    claimed_by: str | None = None,
    **values: Any,
) -> Job | None:
    """Move a job from one of `from_` to `to`; returns the updated job, or None if it was not in `from_`
    (or, when `claimed_by` is given, no longer claimed by that worker)."""
    sources = {from_} if isinstance(from_, JobStatus) else set(from_)
    for source in sources:
        if to not in ALLOWED[source]:
            raise InvalidTransition(f"a job cannot go from {source} to {to}")
    if to.terminal:
        values.setdefault("finished_at", now())
    stmt = (
        update(Job)
        .where(Job.id == job_id, Job.status.in_(sources))
        .values(status=to, **values)
        .returning(Job)
        .execution_options(synchronize_session=False)
    )
    if claimed_by is not None:
        stmt = stmt.where(Job.worker == claimed_by)
    job = session.execute(stmt).scalar_one_or_none()
    if job is not None:
        session.refresh(job)
        if to in (F, C):  # nothing will move what it left transient: settle it in this transaction
            settle_subjects(session, job)
    return job
