"""The `photos` queue (CPU): the hourly retention sweep (`retention_sweep`): photos and pose photos
past PHOTO_RETENTION_DAYS, and objects whose writer died before its row committed."""

from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select

from services.photos.poses import pose_keys
from shared import pending_objects, storage
from shared.config import get_settings
from shared.contracts import RetentionSwept, SweepRetention
from shared.db import session_scope
from shared.jobs import JobContext, job_task
from shared.models import AuditEvent, Photo, PosePhoto


def sweep_expired_photos(now: datetime | None = None) -> int:
    """Delete uploaded photos and pose photos (with their keypoints and
    drawings) older than the retention period; returns how many photos of both kinds."""
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
        keys = [row.object_key for row in expired]
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


@job_task(SweepRetention)
def retention_sweep(ctx: JobContext[SweepRetention]) -> RetentionSwept:
    """Hourly: expired photos and pose photos, and objects whose writer died before its row
    committed (shared/pending_objects.py)."""
    grace = get_settings().pending_object_grace_seconds
    return RetentionSwept(photos_deleted=sweep_expired_photos(), orphans_deleted=pending_objects.sweep(grace))
