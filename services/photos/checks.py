"""The `photos` queue (CPU): the face check of new uploads (`photo_check`)."""

import io
import logging
from datetime import UTC, datetime

from PIL import Image
from sqlalchemy import select

from shared import storage
from shared.config import get_settings
from shared.contracts import CheckPhotos, PhotosChecked
from shared.db import session_scope
from shared.faces import check_photo
from shared.identity import lock_photo_set, recheck_photos
from shared.jobs import JobContext, job_task
from shared.models import Photo, PhotoStatus

log = logging.getLogger(__name__)


@job_task(CheckPhotos)
def check_photos(ctx: JobContext[CheckPhotos]) -> PhotosChecked:
    """Check each uploaded photo for exactly one clear, large-enough face, then the user's whole
    set for photos of someone else (shared/identity.py); returns the job's photos' final counts."""
    s = get_settings()
    photo_ids = ctx.input.photo_ids
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
    return PhotosChecked(**counts)


def _verdict(photo: Photo) -> dict[str, str | None]:
    return {
        "photo_id": str(photo.id),
        "status": str(photo.status),
        "reason_code": photo.reason_code,
        "reason": photo.reason,
    }
