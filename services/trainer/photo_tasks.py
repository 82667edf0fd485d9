"""The `photos` queue (CPU): the face check of new uploads, erasure of a user, the retention sweep.
The pose of pose photos is in pose_tasks.py."""

import io
import logging
import uuid
from datetime import UTC, datetime, timedelta

from PIL import Image
from sqlalchemy import delete, select

from shared import pending_objects, storage
from shared.config import get_settings
from shared.db import session_scope
from shared.faces import check_photo
from shared.identity import lock_photo_set, recheck_photos
from shared.jobs import JobContext, job_task, transition
from shared.models import AuditEvent, Job, JobStatus, Photo, PhotoStatus, PosePhoto, User
from shared.security import subject_hash

log = logging.getLogger(__name__)


@job_task("photo_check")
def check_photos(ctx: JobContext) -> dict:
    """Check each uploaded photo for exactly one clear, large-enough face, then the user's whole
    set for photos of someone else (shared/identity.py); returns the job's photos' final counts."""
    s = get_settings()
    photo_ids = [uuid.UUID(p) for p in ctx.input["photo_ids"]]
    for index, photo_id in enumerate(photo_ids):
        with session_scope() as session:
            photo = session.get(Photo, photo_id)
            if photo is None or photo.user_id != ctx.user_id:
                continue  # deleted meanwhile
            if photo.status is not PhotoStatus.checking:  # done by an earlier attempt
                continue
            image = Image.open(io.BytesIO(storage.get_bytes(photo.object_key)))
            result = check_photo(
                image, min_face_px=s.face_min_px, blur_min_variance=s.blur_min_variance, embed=True
            )
            lock_photo_set(session, ctx.user_id)  # before any row of the set is written
            photo.status = PhotoStatus.accepted if result.accepted else PhotoStatus.rejected
            photo.reason_code, photo.reason = result.reason_code, result.reason
            photo.reason_sentence = result.sentence.to_json() if result.sentence else None
            photo.face = result.face.to_json() if result.face else None
            # Computed once, here: the set's identity check compares the stored embeddings.
            photo.embedding = None if result.embedding is None else [float(v) for v in result.embedding]
            photo.checked_at = datetime.now(UTC)
            session.flush()
            # In the same transaction: no reader sees this photo checked while the set's verdict
            # (someone else's photos) does not count it yet.
            changed = recheck_photos(session, ctx.user_id)
            verdicts = [_verdict(photo)] + [_verdict(p) for p in changed if p.id != photo.id]
        for verdict in verdicts:  # this photo, then any whose identity verdict changed with it
            ctx.progress((index + 1) / len(photo_ids), "checking faces", photo=verdict)
    with session_scope() as session:
        statuses = session.scalars(
            select(Photo.status).where(Photo.id.in_(photo_ids), Photo.user_id == ctx.user_id)
        ).all()
    counts = {"accepted": 0, "rejected": 0}
    for status in statuses:
        if status is not PhotoStatus.checking:
            counts[str(status)] += 1
    return counts


def _verdict(photo: Photo) -> dict:
    return {
        "photo_id": str(photo.id),
        "status": str(photo.status),
        "reason_code": photo.reason_code,
        "reason": photo.reason,
    }


@job_task("erase_user")
def erase_user(ctx: JobContext) -> dict:
    """Delete every object and row of a user, then the user (which deletes this job too).

    Safe to run again after a crash: objects are listed and deleted afresh, rows cascade.
    """
    user_id = ctx.user_id
    assert user_id is not None
    with session_scope() as session:  # stop the user's other work first: nothing new gets stored
        for job in session.scalars(
            select(Job).where(
                Job.user_id == user_id,
                Job.id != ctx.job_id,
                Job.status.in_([JobStatus.queued, JobStatus.running]),
            )
        ):
            transition(
                session,
                job.id,
                {JobStatus.queued, JobStatus.running},
                JobStatus.canceled,
                stage="account deleted",
            )
    ctx.progress(0.1, "deleting files")
    deleted_objects = storage.delete_prefix(storage.user_prefix(user_id))
    ctx.progress(0.7, "deleting records")
    with session_scope() as session:
        user = session.get(User, user_id)
        if user is None:
            return {"objects": deleted_objects}
        # The goodbye mail needs the address after the row is gone: it travels in the job input
        # and the notifier removes it once sent. The job has no owner, so no row links to the user.
        from shared.jobs import enqueue

        enqueue(
            session,
            kind="send_email",
            user_id=None,
            input={
                "template": "data_erased",
                "to": user.email,
                "locale": user.locale,
                "event_key": f"data_erased:{subject_hash(user_id)}",
            },
        )
        session.add(
            AuditEvent(
                action="user_erased",
                subject_hash=subject_hash(user_id),
                detail={"objects_deleted": deleted_objects},
            )
        )
        session.delete(user)  # cascades: photos, jobs (this one too), likenesses, portraits, tokens
    log.info("user erased", extra={"subject": subject_hash(user_id), "objects": deleted_objects})
    return {"objects": deleted_objects}


def sweep_expired_photos(now: datetime | None = None) -> int:
    """Delete uploaded photos (with their crops) and pose photos (with their keypoints and
    drawings) older than the retention period; returns how many photos of both kinds."""
    from services.trainer.pose_tasks import pose_keys

    s = get_settings()
    cutoff = (now or datetime.now(UTC)) - timedelta(days=s.photo_retention_days)
    with session_scope() as session:
        expired = session.execute(
            select(Photo.id, Photo.user_id, Photo.object_key).where(Photo.created_at < cutoff)
        ).all()
        poses = session.execute(
            select(PosePhoto.id, PosePhoto.user_id).where(PosePhoto.created_at < cutoff)
        ).all()
        if not expired and not poses:
            return 0
        keys = [row.object_key for row in expired] + [
            storage.user_key(row.user_id, "crops", f"{row.id}.png") for row in expired
        ]
        keys += [key for row in poses for key in pose_keys(row.user_id, row.id).values()]
        storage.delete_keys(keys)
        session.execute(delete(Photo).where(Photo.id.in_([row.id for row in expired])))
        session.execute(delete(PosePhoto).where(PosePhoto.id.in_([row.id for row in poses])))
        session.add(
            AuditEvent(
                action="retention_sweep",
                detail={
                    "photos_deleted": len(expired),
                    "pose_photos_deleted": len(poses),
                    "older_than_days": s.photo_retention_days,
                },
            )
        )
    return len(expired) + len(poses)


@job_task("retention_sweep")
def retention_sweep(ctx: JobContext) -> dict:
    """Hourly: expired photos and pose photos, and objects whose writer died before its row
    committed (shared/pending_objects.py)."""
    grace = get_settings().pending_object_grace_seconds
    return {"photos_deleted": sweep_expired_photos(), "orphans_deleted": pending_objects.sweep(grace)}
