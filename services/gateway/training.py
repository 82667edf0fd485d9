"""The state of a likeness whose training job ended without training it (canceled by the user, or
failed after its last attempt): read by the likeness routes. A job ending now settles its likeness
in the same transaction (shared/jobs/ended.py); this covers likenesses whose job ended before."""

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from shared.models import Job, JobStatus, Likeness, LikenessStatus

# A training job that ended without training its likeness: what the likeness then is.
ENDED = {JobStatus.failed: LikenessStatus.failed, JobStatus.canceled: LikenessStatus.canceled}


def settle(session: Session, likenesses: Sequence[Likeness]) -> None:
    """A likeness whose job ended without training it is `canceled` (the user stopped it) or
    `failed` (e.g. failed after its last attempt by the reaper), not training forever."""
    training = {lk.job_id: lk for lk in likenesses if lk.status == LikenessStatus.training and lk.job_id}
    if not training:
        return
    ended = session.execute(
        select(Job.id, Job.status).where(Job.id.in_(list(training)), Job.status.in_(list(ENDED)))
    ).all()
    for job_id, job_status in ended:
        training[job_id].status = ENDED[job_status]
    if ended:
        session.commit()
