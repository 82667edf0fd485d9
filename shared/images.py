"""Defensive decoding of uploaded images.

The content decides the type (magic bytes), not the name; the pixel count is checked from the header
before anything is decoded (decompression bombs); EXIF orientation is applied and every bit of metadata
(GPS included) is dropped by re-encoding the pixels.
"""

import hashlib
import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from PIL import Image, ImageOps, UnidentifiedImageError

ALLOWED = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}


class ImageRejected(Exception):
    def __init__(self, status_code: int, message: str):
        super().__init__(message)
        self.status_code = status_code
        self.message = message


@dataclass(frozen=True)
class CleanImage:
    data: bytes  # re-encoded JPEG, no metadata
    width: int
    height: int
    sha256: str
    content_type: str = "image/jpeg"


def sniff_format(head: bytes) -> str | None:
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return None


@contextmanager
def _without_pillow_bomb_guard() -> Iterator[None]:
    saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def clean_upload(raw: bytes, *, filename: str, max_bytes: int, max_pixels: int) -> CleanImage:
    name = filename or "the file"
    if len(raw) > max_bytes:
        raise ImageRejected(
            413,
            f"{name} is larger than {max_bytes / 2**20:.0f} MB, the limit per photo.",
        )
    if not raw:
        raise ImageRejected(400, f"{name} is empty.")
    fmt = sniff_format(raw[:16])
    if fmt is None:
        raise ImageRejected(415, f"{name} is not a JPEG, PNG or WebP photo.")
    try:
        # Pillow's own bomb guard would refuse before we can name the size; ours runs right after
        # the header is read and before any pixel is decoded.
        with _without_pillow_bomb_guard(), Image.open(io.BytesIO(raw), formats=[fmt]) as img:
            width, height = img.size  # from the header: nothing decoded yet
            if width * height > max_pixels:
                raise ImageRejected(
                    400,
                    f"{name} is {width}x{height} pixels; the limit is {max_pixels / 1e6:.0f} megapixels.",
                )
            img.load()  # decodes fully: truncated or corrupt data fails here
            img = ImageOps.exif_transpose(img)
            rgb = img.convert("RGB")
    except ImageRejected:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise ImageRejected(
            400, f"{name} could not be read as an image; it may be damaged or incomplete."
        ) from None
    out = io.BytesIO()
    rgb.save(out, format="JPEG", quality=95)  # no exif=, so no metadata survives
    data = out.getvalue()
    return CleanImage(data, rgb.width, rgb.height, hashlib.sha256(data).hexdigest())


def open_upright(source: str | Path | BinaryIO) -> Image.Image:
    """A stored photo (already checked at upload) as RGB, upright: EXIF orientation applied."""
    with Image.open(source) as im:
        return ImageOps.exif_transpose(im).convert("RGB")
