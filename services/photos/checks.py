"""The `photos` queue (CPU): the face check of new uploads (`photo_check`)."""

import io
import logging
from datetime import UTC, datetime

from PIL import Image

from shared import storage
from shared.config import get_settings
from shared.contracts import CheckPhotos, PhotosChecked
from shared.db import session_scope
from shared.faces import check_photo
from shared.jobs import JobContext, job_task
from shared.models import Photo, PhotoStatus

log = logging.getLogger(__name__)


@job_task(CheckPhotos)
def check_photos(ctx: JobContext[CheckPhotos]) -> PhotosChecked:
    """Check each uploaded photo for exactly one clear, large-enough face."""
    s = get_settings()
    photo_ids = ctx.input.photo_ids
    counts = {"accepted": 0, "rejected": 0}
    for index, photo_id in enumerate(photo_ids):
        with session_scope() as session:
            photo = session.get(Photo, photo_id)
            if photo is None or photo.user_id != ctx.user_id:
                continue  # deleted meanwhile
            if photo.status is not PhotoStatus.checking:  # done by an earlier attempt
                counts[str(photo.status)] += 1
                continue
            image = Image.open(io.BytesIO(storage.get_bytes(photo.object_key)))
            result = check_photo(image, min_face_px=s.face_min_px, blur_min_variance=s.blur_min_variance)
            photo.status = PhotoStatus.accepted if result.accepted else PhotoStatus.rejected
            photo.reason_code, photo.reason = result.reason_code, result.reason
            photo.face = result.face.to_json() if result.face else None
            photo.checked_at = datetime.now(UTC)
            counts[str(photo.status)] += 1
            verdict = {
                "photo_id": str(photo.id),
                "status": str(photo.status),
                "reason_code": photo.reason_code,
                "reason": photo.reason,
            }
        ctx.progress((index + 1) / len(photo_ids), "checking faces", photo=verdict)
    return PhotosChecked(**counts)
