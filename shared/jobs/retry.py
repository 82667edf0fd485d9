"""One place that decides what happens after a failed attempt: another try (after a backoff), or a
final failure.

Backoff: the kind's `retry_base_seconds` x 2^(attempt-1), capped at `retry_max_seconds`, with "equal
jitter" (half fixed, half `random.uniform`; AWS Architecture Blog, "Exponential Backoff And
Jitter"): retries of many jobs that failed in the same outage spread out instead of arriving
together, and none comes sooner than half its step. The delay is a time on the outbox row
(`available_at`), which the relay respects: nothing sleeps in a worker. tenacity, which the runner
uses for in-process retries, has no API for a single delay that is stored and waited elsewhere.

An attempt that failed because a dependency was down (shared/jobs/outage.py) does not count
against `max_attempts` while the outage is younger than `JOB_OUTAGE_WINDOW_SECONDS` (15 min), or
`MAIL_OUTAGE_WINDOW_SECONDS` (4 days) for the mail server: its attempt is given back, and the wait
grows with the outage (about as long as it lasted so far, within the kind's cap).
"""

import random
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from shared.config import get_settings
from shared.contracts import get_kind
from shared.jobs.outbox import add_outbox, mail_failure
from shared.jobs.state import now, transition
from shared.models import Job, JobStatus

DEPENDENCY_NAMES = {
    "database": "the database",
    "redis": "the job queue",
    "storage": "storage",
    "mail": "the mail server",
}


def outage_window(outage: str) -> timedelta:
    """How long an outage of `outage` (a DEPENDENCY_NAMES key) is waited out before attempts count."""
    s = get_settings()
    return timedelta(
        seconds=s.mail_outage_window_seconds if outage == "mail" else s.job_outage_window_seconds
    )


def backoff(kind: str, failures: int, *, outage_seconds: float | None = None) -> float:
    """Seconds to wait before the next attempt of a job of `kind` after `failures` (>= 1) failed
    attempts; with `outage_seconds` (how long a dependency has been failing the job), a wait as long
    as the outage so far, within the kind's base and cap. Jittered: between half and all of it.
    Scaled by the JOB_RETRY_SCALE setting (tests shorten the waits)."""
    k = get_kind(kind)
    if outage_seconds is None:
        step = k.retry_base_seconds * 2 ** max(0, failures - 1)
    else:
        step = max(k.retry_base_seconds, outage_seconds)
    step = min(step, k.retry_max_seconds) * get_settings().job_retry_scale
    return float(step / 2 + random.uniform(0, step / 2))


def retry_or_fail(
    session: Session,
    job: Job,
    *,
    claimed_by: str | None,
    code: str,
    retry_message: str,
    final_message: str,
    result: dict[str, Any] | None = None,
    outage: str | None = None,
) -> Job | None:
    """Hand a running job back to the queue (a new outbox row, due after `backoff`) while attempts
    remain or `outage` (a dependency's name: the attempt failed because it was down) is younger
    than the outage window; else fail it and tell the user (`transition` settles what the kind
    left half-done: shared/jobs/ended.py).
    Returns the job as changed, or None if another process changed it first."""
    t = now()
    since: datetime | None = (job.outage_since or t) if outage else None
    if outage is not None and since is not None and t - since < outage_window(outage):
        delay = backoff(job.kind, job.attempts, outage_seconds=(t - since).total_seconds())
        moved = transition(
            session,
            job.id,
            JobStatus.running,
            JobStatus.queued,
            claimed_by=claimed_by,
            stage="waiting for " + DEPENDENCY_NAMES.get(outage or "", "a service"),
            error_code=f"{outage}_unavailable",  # e.g. storage_unavailable (shared/i18n.py has it in Korean)
            error_message=(
                f"{DEPENDENCY_NAMES.get(outage or '', 'A service').capitalize()} is not answering; "
                f"we try again in {delay:.0f} s."
            ),
            attempts=Job.attempts - 1,  # not the job's fault: the attempt is given back
            outage_since=since,
        )
        if moved is not None:
            add_outbox(session, moved, not_before=t + timedelta(seconds=delay))
        return moved
    if job.attempts < job.max_attempts:
        delay = backoff(job.kind, job.attempts)
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
            add_outbox(session, moved, not_before=t + timedelta(seconds=delay))
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
