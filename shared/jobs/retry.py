"""One place that decides what happens after a failed attempt: another try, or a final failure."""

from typing import Any

from sqlalchemy.orm import Session

from shared.jobs.outbox import add_outbox, mail_failure
from shared.jobs.state import transition
from shared.models import Job, JobStatus


def retry_or_fail(
    session: Session,
    job: Job,
    *,
    claimed_by: str | None,
    code: str,
    retry_message: str,
    final_message: str,
    result: dict[str, Any] | None = None,
) -> Job | None:
    """Hand a running job back to the queue (new outbox row) while attempts remain, else fail it and
    tell the user. Returns the job as changed, or None if another process changed it first."""
    if job.attempts < job.max_attempts:
        moved = transition(
            session,
            job.id,
            JobStatus.running,
            JobStatus.queued,
            claimed_by=claimed_by,
            stage="retrying",
            error_code=code,
            error_message=retry_message,
        )
        if moved is not None:
            add_outbox(session, moved)
        return moved
    moved = transition(
        session,
        job.id,
        JobStatus.running,
        JobStatus.failed,
        claimed_by=claimed_by,
        error_code=code,
        error_message=final_message,
        result=result,
    )
    if moved is not None:
        mail_failure(session, moved)
    return moved
