"""`pose_extract` (queue `photos`): the pose of a pose photo (POST /v1/poses), MediaPipe BlazePose.

Under `users/<uid>/poses/`: `<id>.json` (OpenPose COCO-18 keypoints), `<id>_skeleton.png` (the
OpenPose control image) and `<id>_preview.jpg` (the skeleton over the photo); the keypoints are
also kept on the row, which is what the generator reads."""

from __future__ import annotations

import uuid

from shared.contracts.base import JobInput, JobKind, JobResult

POSE_FILES: dict[str, str] = {  # role -> suffix after the pose id, under users/<uid>/poses/
    "photo": ".jpg",
    "keypoints": ".json",
    "skeleton": "_skeleton.png",
    "preview": "_preview.jpg",
}


class ExtractPose(JobInput):
    kind = "pose_extract"
    pose_id: uuid.UUID
    fingerprint: str | None = None  # of the upload request (Idempotency-Key replays)


class PoseExtracted(JobResult):
    pose_id: uuid.UUID
    status: str  # "ready", "rejected", "deleted" (meanwhile), or the status an earlier attempt left
    reason_code: str | None = None
    people: int = 1  # people seen in the photo; the most prominent one's pose is used


KIND = JobKind(
    ExtractPose.kind,
    "photos.pose",
    "photos",
    ExtractPose,
    PoseExtracted,
    promises=tuple(f"users/<uid>/poses/<id>{suffix}" for suffix in POSE_FILES.values()),
)
