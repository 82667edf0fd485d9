"""Photos: upload (decoded defensively, checked by a worker), list, view, delete."""

import uuid
from datetime import UTC, datetime

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.gateway.api import deps
from services.gateway.api.deletion import FILES_DELETED_LATER, deleted_files
from services.gateway.api.deps import ConsentedUser, CurrentUser, IdempotencyKey, SessionDep, owned
from services.gateway.api.schemas import JobOut, PhotoList, PhotoOut, UploadOut
from services.gateway.idempotency import replay
from services.gateway.ratelimit import limiter, user_or_ip
from services.gateway.uploads import (
    check_room,
    commit_upload,
    image_columns,
    lock_uploads,
    read_clean,
    upload_body,
    uploaded_files,
)
from shared import pending_objects, storage
from shared.config import get_settings
from shared.contracts import CheckPhotos
from shared.identity import lock_photo_set, recheck_photos
from shared.images import CleanImage
from shared.jobs import enqueue
from shared.jobs.outbox import request_fingerprint
from shared.models import Photo, PhotoStatus

router = APIRouter(prefix="/photos", tags=["photos"])
DUPLICATE = "You already uploaded this photo; it counts once toward your good photos."


def photo_out(photo: Photo) -> PhotoOut:
    return PhotoOut.of(photo, storage.presign_get(photo.object_key))


@router.post(
    "",
    status_code=201,
    response_model=UploadOut,
    openapi_extra=upload_body(
        "files", get_settings().upload_max_files, "1 to 20 JPEG, PNG, WebP or HEIC/HEIF photos"
    ),
)
@limiter.limit(get_settings().upload_rate_limit, key_func=user_or_ip)
async def upload_photos(
    request: Request, user: ConsentedUser, session: SessionDep, idempotency_key: IdempotencyKey
) -> UploadOut:
    """Upload photos; each is checked for one clear face by the `photo_check` job returned.

    All or nothing: if any file is refused, nothing is stored and the answer names the file.
    A photo with the same cleaned pixels (sha256) as one the user already has, or one earlier in
    this request, is stored rejected at once with reason_code "duplicate": it counts once.

    The body (multipart/form-data, field `files`) is read only after the sign-in, the consent and
    the rate limit passed; each file is refused (413) as soon as it passes the per-photo cap.
    """
    await run_in_threadpool(deps.release_connection, session)
    async with uploaded_files(request, "files", get_settings().upload_max_files) as files:
        cleaned = [await read_clean(upload) for upload in files]
    # The database and S3 calls block: run them off the event loop too.
    return await run_in_threadpool(_store_upload, session, user.id, cleaned, idempotency_key)


def _store_upload(
    session: Session, user_id: uuid.UUID, cleaned: list[CleanImage], idempotency_key: str | None
) -> UploadOut:
    fingerprint = request_fingerprint(CheckPhotos.kind, [c.sha256 for c in cleaned])
    lock_uploads(session, user_id)
    deps.hold_account(session, user_id)
    first = replay(session, user_id, idempotency_key, CheckPhotos, fingerprint)
    if first is not None:  # a retried request: answer as the first time, store nothing
        ids = first.input.photo_ids
        found = {p.id: p for p in session.scalars(select(Photo).where(Photo.id.in_(ids)))}
        photos = [found[i] for i in ids if i in found]  # in upload order, as the first answer
        return UploadOut(photos=[photo_out(p) for p in photos], job=JobOut.of(first.job))
    most = get_settings().photos_per_user_max
    check_room(session, Photo.user_id, user_id, len(cleaned), most, "upload.too_many_photos")

    seen = set(
        session.scalars(
            select(Photo.sha256).where(
                Photo.user_id == user_id,
                Photo.sha256.in_([c.sha256 for c in cleaned]),
                # A twin rejected as a duplicate is no original: once the original is deleted, the
                # same picture may be uploaded again.
                # Nor is a photo whose check failed for good: it asks to be uploaded again.
                Photo.reason_code.is_distinct_from("duplicate"),
                Photo.reason_code.is_distinct_from("check_failed"),
            )
        )
    )
    photos = []
    for c in cleaned:
        photo = Photo(
            id=(pid := uuid.uuid4()),
            user_id=user_id,
            object_key=storage.user_key(user_id, "photos", f"{pid}.jpg"),
            **image_columns(c),
        )
        if c.sha256 in seen:  # same cleaned pixels: counts once (the photo_check job skips it)
            photo.status, photo.reason_code, photo.reason = PhotoStatus.rejected, "duplicate", DUPLICATE
            photo.checked_at = datetime.now(UTC)
        seen.add(c.sha256)
        photos.append(photo)
    # A gateway killed between the writes and the commit leaves no orphan: the sweep deletes
    # announced keys that never settled (shared/pending_objects.py).
    pending_objects.announce([p.object_key for p in photos])
    stored: list[str] = []  # keys whose write was started: a write that timed out may still land
    try:
        for photo, clean in zip(photos, cleaned, strict=True):
            stored.append(photo.object_key)
            storage.put_bytes(photo.object_key, clean.data, clean.content_type)
        session.add_all(photos)
        session.flush()
        job_input = CheckPhotos(photo_ids=[p.id for p in photos], fingerprint=fingerprint)
        job = enqueue(session, job_input, user_id=user_id, idempotency_key=idempotency_key)
        pending_objects.settle(session, [p.object_key for p in photos])
    except BaseException as e:  # nothing committed: no orphaned objects
        session.rollback()
        storage.discard(stored, e)  # (storage failing: 503 now, deleted later)
        raise
    commit_upload(session, "upload.outcome_unknown")  # its objects stay if the commit fails
    return UploadOut(photos=[photo_out(p) for p in photos], job=JobOut.of(job))


@router.get("", response_model=PhotoList)
def list_photos(user: CurrentUser, session: SessionDep) -> PhotoList:
    photos = session.scalars(select(Photo).where(Photo.user_id == user.id).order_by(Photo.created_at)).all()
    return PhotoList(photos=[photo_out(p) for p in photos])


@router.get("/{photo_id}", response_model=PhotoOut)
def read_photo(photo_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> PhotoOut:
    return photo_out(owned(session, Photo, photo_id, user, "Photo"))


@router.delete("/{photo_id}", status_code=204, responses=FILES_DELETED_LATER)
def delete_photo(photo_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> Response:
    """Delete the photo: 204, or 202 with a sentence while the storage is down (the files are
    deleted once it answers).
    \f
    services/gateway/api/deletion.py"""
    photo = owned(session, Photo, photo_id, user, "Photo")
    lock_photo_set(session, user.id)  # as the photo check does: one writer of the set at a time
    session.delete(photo)
    session.flush()
    recheck_photos(session, user.id)  # the set changed: whose photos these are may have too
    pending_objects.condemn(session, [photo.object_key])
    session.commit()
    return deleted_files([photo.object_key])
