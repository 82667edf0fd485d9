"""Pose photos: a photo whose pose the portraits take (upload, list, view, delete).

The photo may show anyone: it is used for the pose only (OpenPose keypoints found by the
`pose_extract` job on the photos queue), never for a face or a likeness.
"""

import uuid
from datetime import datetime

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.gateway import uploads
from services.gateway.api import deps
from services.gateway.api.deletion import FILES_DELETED_LATER, delete_with_objects
from services.gateway.api.deps import ConsentedUser, CurrentUser, IdempotencyKey, SessionDep, owned
from services.gateway.api.face_data import pose_files
from services.gateway.api.schemas import JobOut
from services.gateway.idempotency import replay
from services.gateway.ratelimit import limiter, user_or_ip
from services.gateway.uploads import commit_upload, image_columns, read_clean, upload_body, uploaded_files
from shared import pending_objects, storage
from shared.config import get_settings
from shared.contracts import ExtractPose
from shared.i18n import by_code, current_locale
from shared.images import CleanImage
from shared.jobs import enqueue
from shared.jobs.outbox import request_fingerprint
from shared.models import Job, PosePhoto, User

router = APIRouter(prefix="/poses", tags=["poses"])
USE = "The photo is used for its pose only: the portraits take the pose, not the person's look."


class PoseOut(BaseModel):
    id: uuid.UUID
    status: str  # extracting | ready | rejected
    reason_code: str | None
    reason: str | None
    width: int
    height: int
    url: str  # the photo (presigned GET)
    preview_url: str | None  # the skeleton drawn over the photo, once ready
    keypoints: dict | None  # OpenPose JSON (COCO-18) on the photo's canvas, once ready
    created_at: datetime | None

    @classmethod
    def of(cls, pose: PosePhoto) -> "PoseOut":
        return cls(
            id=pose.id,
            status=pose.status,
            reason_code=pose.reason_code,
            reason=by_code(f"pose.{pose.reason_code}", pose.reason, current_locale.get()),
            width=pose.width,
            height=pose.height,
            url=storage.presign_get(pose.object_key),
            preview_url=storage.presign_get(pose.preview_key) if pose.preview_key else None,
            keypoints=pose.keypoints,
            created_at=pose.created_at,
        )


class PoseUploaded(BaseModel):
    pose: PoseOut
    job: JobOut
    detail: str = USE


class PoseList(BaseModel):
    poses: list[PoseOut]


@router.post(
    "",
    status_code=201,
    response_model=PoseUploaded,
    openapi_extra=upload_body("file", 1, f"One JPEG, PNG, WebP or HEIC photo. {USE}"),
)
@limiter.limit(get_settings().upload_rate_limit, key_func=user_or_ip)
async def upload_pose(
    request: Request, user: ConsentedUser, session: SessionDep, idempotency_key: IdempotencyKey
) -> PoseUploaded:
    """Upload one photo whose pose the portraits may take; follow the `pose_extract` job returned.
    No person, or too little of one, ends with status `rejected` and a reason. An account keeps at
    most POSES_PER_USER_MAX pose photos, rejected ones too: past it, 409 says to delete some.

    The body (multipart/form-data, field `file`) is read only after the sign-in, the consent and the
    rate limit passed, and refused (413) as soon as it passes the per-photo cap."""
    await run_in_threadpool(deps.release_connection, session)
    async with uploaded_files(request, "file", 1) as files:
        clean = await read_clean(files[0])
    return await run_in_threadpool(_store, session, user, clean, idempotency_key)


def _store(session: Session, user: User, clean: CleanImage, idempotency_key: str | None) -> PoseUploaded:
    user_id = user.id
    fingerprint = request_fingerprint(ExtractPose.kind, [clean.sha256])
    uploads.lock_uploads(session, user_id)  # uploads at once take turns: each counts the others' rows
    deps.hold_account(session, user_id)
    first = replay(session, user_id, idempotency_key, ExtractPose, fingerprint)
    if first is not None:  # a retried request: answer as the first time, store nothing
        pose = owned(session, PosePhoto, first.input.pose_id, user, "Pose")
        return PoseUploaded(pose=PoseOut.of(pose), job=JobOut.of(first.job))
    most = get_settings().poses_per_user_max
    uploads.check_room(session, PosePhoto.user_id, user_id, 1, most, "upload.too_many_poses")
    pose = PosePhoto(
        id=(pid := uuid.uuid4()),
        user_id=user_id,
        object_key=storage.user_key(user_id, "poses", f"{pid}.jpg"),
        status="extracting",
        **image_columns(clean),
    )
    pending_objects.announce([pose.object_key])  # no orphan if killed before the commit
    try:
        storage.put_bytes(pose.object_key, clean.data, clean.content_type)
        session.add(pose)
        session.flush()
        job_input = ExtractPose(pose_id=pid, fingerprint=fingerprint)
        job: Job = enqueue(session, job_input, user_id=user_id, idempotency_key=idempotency_key)
        pending_objects.settle(session, [pose.object_key])
    except BaseException as e:  # nothing committed: no orphaned object
        session.rollback()
        storage.discard([pose.object_key], e)
        raise
    commit_upload(session, "pose.outcome_unknown")  # its object stays if the commit fails
    return PoseUploaded(pose=PoseOut.of(pose), job=JobOut.of(job))


@router.get("", response_model=PoseList)
def list_poses(user: CurrentUser, session: SessionDep) -> PoseList:
    rows = session.scalars(
        select(PosePhoto).where(PosePhoto.user_id == user.id).order_by(PosePhoto.created_at)
    ).all()
    return PoseList(poses=[PoseOut.of(p) for p in rows])


@router.get("/{pose_id}", response_model=PoseOut)
def read_pose(pose_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> PoseOut:
    return PoseOut.of(owned(session, PosePhoto, pose_id, user, "Pose"))


@router.delete("/{pose_id}", status_code=204, responses=FILES_DELETED_LATER)
def delete_pose(pose_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> Response:
    """Delete the pose photo, its keypoints and drawings: 204, or 202 with a sentence while S3 is
    down (the files are deleted once it answers)."""
    pose = owned(session, PosePhoto, pose_id, user, "Pose")
    return delete_with_objects(session, pose, [pose_files(pose)])
