"""`photo_check` (queue `photos`): the face check of uploaded photos (POST /v1/photos).

Sets each photo `accepted` or `rejected` (with `reason_code` and `Photo.face`); sends an event per
photo with its verdict."""

from __future__ import annotations

import uuid

from shared.contracts.base import JobInput, JobKind, JobResult


class CheckPhotos(JobInput):
    kind = "photo_check"
    photo_ids: list[uuid.UUID]
    fingerprint: str | None = None  # of the upload request (Idempotency-Key replays)


class PhotosChecked(JobResult):
    accepted: int = 0
    rejected: int = 0


KIND = JobKind(
    CheckPhotos.kind,
    "photos.check",
    "photos",
    CheckPhotos,
    PhotosChecked,
    promises=("Photo.status, Photo.reason_code, Photo.face",),
)
