"""The `photos` queue (CPU): the pose of a pose photo (`pose_extract`, POST /v1/poses), with
MediaPipe BlazePose.

Stored under `users/<uid>/poses/`: `<id>.jpg` (the photo, by the gateway), `<id>.json` (OpenPose
COCO-18 keypoints on the photo's canvas), `<id>_skeleton.png` (the OpenPose control image at the
photo's size) and `<id>_preview.jpg` (the skeleton over the photo). The keypoints are also kept on
the row, which is what the generator reads.
"""

import io
import json
import uuid

from sqlalchemy import select

from shared import pending_objects, storage
from shared.accounts import hold_account
from shared.blazepose import PoseRejected, find_pose
from shared.contracts import ErrorCode, ExtractPose, PoseExtracted
from shared.contracts.pose_extract import POSE_FILES
from shared.db import session_scope
from shared.i18n import Sentence
from shared.images import open_upright
from shared.jobs import JobContext, JobError, job_task
from shared.models import PosePhoto
from shared.pose import draw_over, draw_pose


def pose_keys(user_id: uuid.UUID, pose_id: uuid.UUID) -> dict[str, str]:
    """Every object of one pose photo, by role."""
    return {
        role: storage.user_key(user_id, "poses", f"{pose_id}{suffix}") for role, suffix in POSE_FILES.items()
    }


def _encode(image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


@job_task(ExtractPose)
def extract_pose_job(ctx: JobContext[ExtractPose]) -> PoseExtracted:
    """BlazePose on the photo -> `ready` with keypoints and images, or `rejected` with a reason.
    A photo of several people is `ready` with the most prominent person's pose and reason_code
    "several_people" (shared.blazepose.find_pose)."""
    pose_id = ctx.input.pose_id
    with session_scope() as session:
        row = session.scalars(
            select(PosePhoto).where(PosePhoto.id == pose_id, PosePhoto.user_id == ctx.user_id)
        ).one_or_none()
        if row is None:
            raise JobError.of(ErrorCode.pose_deleted)
        photo_key, status = row.object_key, row.status
    if status != "extracting":  # done by an earlier attempt
        return PoseExtracted(pose_id=pose_id, status=status)
    ctx.progress(0.1, "finding the pose")
    photo = open_upright(io.BytesIO(storage.get_bytes(photo_key)))
    keys = pose_keys(ctx.owner, pose_id)
    try:
        found = find_pose(photo)
    except PoseRejected as rejected:
        with session_scope() as session:
            row = session.get(PosePhoto, pose_id)
            if row is not None and row.status == "extracting":  # not one its job's end settled
                row.status, row.reason_code, row.reason = "rejected", rejected.code, rejected.reason
        return PoseExtracted(pose_id=pose_id, status="rejected", reason_code=rejected.code)
    pose = found.pose
    # Several people: the most prominent one's pose is used, and the preview shows whose it is.
    note = Sentence("pose.several_people", {"count": found.people}) if found.people > 1 else None
    keypoints = pose.to_openpose_json(photo.width, photo.height)
    ctx.progress(0.7, "drawing the skeleton")
    written = [keys["keypoints"], keys["skeleton"], keys["preview"]]
    pending_objects.announce(written)  # no orphans if this worker dies before the row
    storage.put_bytes(keys["keypoints"], json.dumps(keypoints).encode(), "application/json")
    skeleton = draw_pose(pose, photo.width, photo.height)
    storage.put_bytes(keys["skeleton"], _encode(skeleton, "PNG"), "image/png")
    storage.put_bytes(keys["preview"], _encode(draw_over(photo, pose), "JPEG"), "image/jpeg")
    with session_scope() as session:
        # Under the account hold (shared/accounts.py): an erasure that began meanwhile may have
        # listed the user's files before these writes.
        row = session.get(PosePhoto, pose_id) if hold_account(session, ctx.owner) else None
        if row is not None and row.status != "extracting":  # settled when its job ended (canceled)
            row = None
        if row is not None:
            row.status, row.keypoints, row.preview_key = "ready", keypoints, keys["preview"]
            if note is not None:
                row.reason_code, row.reason = "several_people", note.render()
            pending_objects.settle(session, written)
    if row is None:  # deleted or settled meanwhile: leave nothing behind (the sweep, if S3 fails now)
        pending_objects.delete_now(list(keys.values()))
        return PoseExtracted(pose_id=pose_id, status="deleted")
    return PoseExtracted(pose_id=pose_id, status="ready", people=max(found.people, 1))
