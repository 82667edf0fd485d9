"""What a job that ended without succeeding leaves behind, set right in the transaction that ends it.

Some kinds hold an object in a transient state while they run (a photo `checking`, a pose photo
`extracting`, a likeness `training`); only their job moves it on. A job that fails for good (its last
attempt failed, the reaper found its worker dead, a non-retryable error) or is canceled never will:
the object would read transient forever (a page spinning, a generation refused `pose_not_ready`).
So `shared.jobs.state.transition`, the one place a job's status changes, calls `settle_subjects` for
every job it moves to `failed` or `canceled`, and the object takes a final state with a reason the
user can read and act on (upload it again, delete it, train again).

Kinds with no transient object: `generate_portraits` (a portrait row is written done), `erase_user`,
`retention_sweep`. `send_email` (its delivery row is locked while sending) forgets the address its
input may carry (the goodbye mail of an erased account, a job of no user).
"""

from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import update
from sqlalchemy.orm import Session

from shared import i18n
from shared.models import Job, JobStatus, Likeness, LikenessStatus, Photo, PhotoStatus, PosePhoto


def settle_subjects(session: Session, job: Job) -> None:
    """Move what `job` (just `failed` or `canceled`) left transient to a final state, in the
    caller's transaction. Objects already final (done by the job, deleted) are left as they are."""
    if job.status in (JobStatus.failed, JobStatus.canceled):  # a user's job, or one of no user's
        settle = SETTLERS.get(job.kind)
        if settle is not None:
            settle(session, job)


def _reject_unchecked_photos(session: Session, job: Job) -> None:
    """`photo_check`: photos it did not get to would read `checking` forever and, as originals, make
    their re-upload a duplicate; they are rejected with reason_code `check_failed` instead (the upload
    route does not count those as originals), so the user can upload them again."""
    ids = list((job.input or {}).get("photo_ids", []))
    if ids:
        session.execute(
            update(Photo)
            .where(Photo.id.in_(ids), Photo.user_id == job.user_id, Photo.status == PhotoStatus.checking)
            .values(
                status=PhotoStatus.rejected,
                reason_code="check_failed",
                reason=i18n.say("photo.check_failed"),
                checked_at=datetime.now(UTC),
            )
            .execution_options(synchronize_session="fetch")
        )


def _reject_unextracted_pose(session: Session, job: Job) -> None:
    """`pose_extract`: a pose still `extracting` is `rejected` (`extract_failed`, or `extract_canceled`
    when the job was canceled): the page shows the sentence, and the user deletes it or uploads the
    photo again; a generation refuses it with its status, as any pose not `ready`."""
    pose_id = (job.input or {}).get("pose_id")
    if pose_id:
        code = "extract_canceled" if job.status is JobStatus.canceled else "extract_failed"
        session.execute(
            update(PosePhoto)
            .where(
                PosePhoto.id == pose_id, PosePhoto.user_id == job.user_id, PosePhoto.status == "extracting"
            )
            .values(status="rejected", reason_code=code, reason=i18n.say(f"pose.{code}"))
            .execution_options(synchronize_session="fetch")
        )


def _end_training(session: Session, job: Job) -> None:
    """`train_likeness`: a likeness still `training` is `failed` (the job's error says why) or
    `canceled` (the user stopped it; training may start again)."""
    status = LikenessStatus.canceled if job.status is JobStatus.canceled else LikenessStatus.failed
    session.execute(
        update(Likeness)
        .where(Likeness.job_id == job.id, Likeness.status == LikenessStatus.training)
        .values(status=status)
        .execution_options(synchronize_session="fetch")
    )


def forget_recipient(session: Session, job: Job) -> None:
    """`send_email`: the address a mail travels with (the goodbye mail of an erased account) is not
    kept once it is no longer needed: the mail was sent, or the job ended without sending it (a mail
    server down for days)."""
    if "to" in (job.input or {}):
        job.input = {k: v for k, v in job.input.items() if k != "to"}


SETTLERS: dict[str, Callable[[Session, Job], None]] = {
    "send_email": forget_recipient,
    "photo_check": _reject_unchecked_photos,
    "pose_extract": _reject_unextracted_pose,
    "train_likeness": _end_training,
}
