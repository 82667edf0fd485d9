"""Uploaded pictures (photos, pose photos): read within the size cap and decoded defensively
(shared/images.py), off the event loop."""

from typing import Any

from fastapi import UploadFile
from fastapi.concurrency import run_in_threadpool

from services.gateway.api.language import Refusal
from shared.config import get_settings
from shared.images import CleanImage, ImageRejected, clean_upload


async def read_clean(upload: UploadFile) -> CleanImage:
    """One uploaded photo, decoded defensively (shared.images); a refusal is an HTTP error that
    names the file."""
    s = get_settings()
    raw = await upload.read(s.upload_max_bytes + 1)  # never hold more than the cap
    try:
        return await run_in_threadpool(  # decoding is CPU work: keep the event loop free
            clean_upload,
            raw,
            filename=upload.filename or "photo",
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
