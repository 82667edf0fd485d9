"""Uploaded pictures (photos, pose photos): read only after the caller passed every check, each file
capped as it streams.

FastAPI reads a `File()` parameter's whole form before it resolves the route's dependencies and before
slowapi's rate limit runs: a signed-in account without consent (or over its rate limit) made the
gateway spool up to 301 MB to temp disk, and only then heard 403 (or 429); three at once, 783 MB. The
upload routes therefore take no form parameter: their dependencies (sign-in, consent, the
Idempotency-Key header) and the rate limit answer first, and the endpoint then reads the body with
`uploaded_files`, which refuses a file at the moment it passes `upload_max_bytes` (413 naming it), a file
more than the route takes, and a form that is not one. The gateway's body limits still apply around it
(services/gateway/body_limits.py: 413 by `Content-Length` before a byte is read, 408 when it stalls).
Each file is then decoded defensively (shared/images.py) off the event loop (`read_clean`).
"""

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Request, status
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import InstrumentedAttribute, Session
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser

from services.gateway.api.language import Refusal
from shared.config import get_settings
from shared.db import lock_not_available
from shared.i18n import clipped
from shared.images import CleanImage, ImageRejected, clean_upload

MAX_FIELDS = 8  # an upload has no text fields; a client may add a few (filenames, a caption): 1 MB each
UPLOAD_LOCK_CLASS = 0x5055  # pg_advisory_xact_lock(class, key): the class of the users' upload locks


class CappedMultiPartParser(MultiPartParser):
    """Starlette's multipart parser that ends the parse with 413 (`upload.too_large`, naming the file)
    as soon as one file part passes `file_max_bytes`: at most the cap plus one chunk of it is read."""

    def __init__(self, *args: Any, file_max_bytes: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.file_max_bytes = file_max_bytes
        self._file_bytes = 0

    def on_headers_finished(self) -> None:
        super().on_headers_finished()
        self._file_bytes = 0

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        part = self._current_part
        if part.file is not None:
            self._file_bytes += end - start
            if self._file_bytes > self.file_max_bytes:
                name = file_label(part.file.filename)
                raise Refusal(413, "upload.too_large", name=name, mb=f"{self.file_max_bytes / 2**20:.0f}")
        super().on_part_data(data, start, end)


def file_label(filename: str | None) -> str:
    """An uploaded file's name as a refusal names it: the client's, clipped (it chose the length)."""
    return clipped(filename or "photo")


@asynccontextmanager
async def uploaded_files(request: Request, field: str, max_files: int) -> AsyncIterator[list[UploadFile]]:
    """The files of form field `field` (1 to `max_files`), read from the request's multipart body;
    every file of the form is closed (its spool deleted) when the block ends.

    Raises Refusal: 413 `upload.too_large` for a file over `upload_max_bytes` (while it streams),
    400 `upload.none_in_field` for no file in `field`, `upload.count` for too many (`upload.one_photo`
    for either when `max_files` is 1), 400 `upload.not_a_form` (`upload.not_a_form_one`) for a body
    that is not `multipart/form-data`.
    """
    count = Refusal(status.HTTP_400_BAD_REQUEST, "upload.count", max=max_files)
    if max_files == 1:
        count = Refusal(status.HTTP_400_BAD_REQUEST, "upload.one_photo", field=field)
    not_a_form = Refusal(
        status.HTTP_400_BAD_REQUEST,
        "upload.not_a_form_one" if max_files == 1 else "upload.not_a_form",
        field=field,
    )
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise not_a_form
    parser = CappedMultiPartParser(
        request.headers,
        request.stream(),
        max_files=max_files,
        max_fields=MAX_FIELDS,
        file_max_bytes=get_settings().upload_max_bytes,
    )
    try:
        form = await parser.parse()  # closes its files itself when it fails
    except MultiPartException as e:
        if str(e).startswith("Too many files"):
            raise count from None
        raise not_a_form from None
    try:
        files = [f for f in form.getlist(field) if isinstance(f, UploadFile)]
        if not files and max_files > 1:  # another field's name, a text field, a cut-off body
            raise Refusal(status.HTTP_400_BAD_REQUEST, "upload.none_in_field", field=field, max=max_files)
        if not 1 <= len(files) <= max_files:
            raise count
        yield files
    finally:
        await form.close()


def upload_body(field: str, max_files: int, description: str) -> dict[str, Any]:
    """The route's `openapi_extra`: its multipart request body, as FastAPI documents a `File()`
    parameter, and the refusals of its form. `takes_files` (body_limits.py) reads it to give the
    route the upload limits."""
    one = {"type": "string", "format": "binary"}
    schema = one if max_files == 1 else {"type": "array", "items": one, "maxItems": max_files}
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    # The refusals of the form and its files, `{"detail"}` like every refusal: a client reading the
    # schema learns that a missing field is a 400 here, not a 422 with `errors`.
    refusals = {
        "400": f"not a multipart form, or not 1 to {max_files} photo(s) in the form field {field}",
        "409": "another upload of this account is under way, or the photo limit is reached",
        "413": "a photo larger than the upload limit",
        "415": "a file that is not a JPEG, PNG, WebP or HEIC photo",
    }
    return {
        "responses": {code: {"description": why, "content": error} for code, why in refusals.items()},
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": [field],
                        "properties": {field: {**schema, "description": description}},
                    }
                }
            },
        },
    }


async def read_clean(upload: UploadFile) -> CleanImage:
    """One uploaded photo, decoded defensively (shared.images); a refusal is an HTTP error that
    names the file."""
    s = get_settings()
    raw = await upload.read(s.upload_max_bytes + 1)  # never hold more than the cap
    try:
        return await run_in_threadpool(  # decoding is CPU work: keep the event loop free
            clean_upload,
            raw,
            filename=file_label(upload.filename),
            max_bytes=s.upload_max_bytes,
            max_pixels=s.upload_max_pixels,
        )
    except ImageRejected as e:
        raise Refusal(e.status_code, e.sentence.key, **e.sentence.values) from None


def image_columns(clean: CleanImage) -> dict[str, Any]:
    """The columns a stored upload's row takes from the decoded image."""
    return {
        "content_type": clean.content_type,
        "width": clean.width,
        "height": clean.height,
        "size_bytes": len(clean.data),
        "sha256": clean.sha256,
    }


def commit_upload(session: Session, sentence_key: str) -> None:
    """Commit an upload's rows, written after their objects and settling their announcements
    (shared/pending_objects.py) in the same transaction.

    A COMMIT that raised may still have landed: the connection can drop after the server ran it and
    before its answer came back (a failover, a restart, a network blip). So its objects are not
    deleted here: if the rows did commit they name them, and if not their announcements are still
    there and the retention sweep deletes them after PENDING_OBJECT_GRACE_SECONDS.

    Raises Refusal 503 (`sentence_key`: the upload may or may not be stored, look before sending it
    again) with Retry-After when the commit raised."""
    try:
        session.commit()
    except Exception as e:
        session.rollback()
        retry_after = str(get_settings().retry_after_seconds)
        raise Refusal(503, sentence_key, headers={"Retry-After": retry_after}) from e


def lock_uploads(session: Session, user_id: uuid.UUID) -> None:
    """Take the user's upload lock until the transaction ends (a Postgres transaction-level advisory
    lock, not the user's row: PATCH /v1/me and the photo checks need not wait): two uploads of the
    same user at once (photos or pose photos) store one after the other, so each sees the other's
    rows, as duplicates and in `check_room`'s count.
    Raises Refusal 409 (Retry-After: 1) when the other still stores after the lock timeout."""
    key = user_id.int & 0x7FFFFFFF  # a collision only makes two users' uploads take turns
    try:
        session.execute(select(func.pg_advisory_xact_lock(UPLOAD_LOCK_CLASS, key)))
    except OperationalError as e:
        if not lock_not_available(e):
            raise
        # Another upload of the user's was still storing after DATABASE_LOCK_TIMEOUT_MS (large
        # photos): a wait longer than that would read as a hung database (shared/db.py).
        raise Refusal(409, "upload.in_progress", headers={"Retry-After": "1"}) from e


def check_room(
    session: Session,
    owner: InstrumentedAttribute[uuid.UUID],
    user_id: uuid.UUID,
    count: int,
    most: int,
    sentence_key: str,
) -> None:
    """Refuse an upload of `count` rows that would take the user past `most` rows whose `owner`
    column (say `Photo.user_id`) is theirs: every stored upload is an object in S3 and a job,
    rejected ones too, and re-sending a picture in a loop must not grow a user's storage without
    bound. Call it under `lock_uploads`, so two uploads at once cannot both pass the count, and
    after the Idempotency-Key replay, so a retry of an upload that was stored is answered as before.

    Raises Refusal 409 (`sentence_key`, with `have`, `max` and `count`) when there is no room."""
    have = session.scalar(select(func.count()).where(owner == user_id)) or 0
    if have + count > most:
        raise Refusal(409, sentence_key, have=have, max=most, count=count)
