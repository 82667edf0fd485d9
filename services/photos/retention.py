"""The `photos` queue (CPU): the hourly retention sweep (`retention_sweep`): photos and pose photos
past PHOTO_RETENTION_DAYS, and objects whose writer died before its row committed."""

import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select

from services.photos.poses import pose_keys
from shared import pending_objects, storage
from shared.config import get_settings
from shared.contracts import RetentionSwept, SweepRetention
from shared.db import session_scope
from shared.jobs import JobContext, job_task
from shared.models import AuditEvent, Photo, PosePhoto

log = logging.getLogger(__name__)


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
        files = {row.id: [row.object_key] for row in expired}
        files |= {row.id: list(pose_keys(row.user_id, row.id).values()) for row in poses}
        failed: dict[str, str] = {}
        try:
            storage.delete_keys([key for keys in files.values() for key in keys])
        except storage.DeleteIncomplete as e:  # those rows stay for the next hour's sweep
            failed = e.failed
            log.warning("retention: S3 did not delete %d objects; trying again next time", len(failed))
        # a row goes only with all of its files: one key S3 refuses holds up no other photo
        expired = [row for row in expired if not any(k in failed for k in files[row.id])]
        poses = [row for row in poses if not any(k in failed for k in files[row.id])]
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
