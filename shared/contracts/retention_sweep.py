"""`retention_sweep` (queue `photos`, hourly from the scheduler, or `studio sweep`): photos and pose
photos past PHOTO_RETENTION_DAYS, and objects whose writer died before its row committed."""

from __future__ import annotations

from shared.contracts.base import JobInput, JobKind, JobResult


class SweepRetention(JobInput):
    kind = "retention_sweep"


class RetentionSwept(JobResult):
    photos_deleted: int
    orphans_deleted: int


KIND = JobKind(
    SweepRetention.kind,
    "photos.retention_sweep",
    "photos",
    SweepRetention,
    RetentionSwept,
    promises=("AuditEvent `retention_sweep`",),
    retry_base_seconds=30,
    retry_max_seconds=600,
)
