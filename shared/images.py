"""Defensive decoding of uploaded images.

The content decides the type (magic bytes), not the name; the pixel count is checked from the header
before anything is decoded (decompression bombs); a JPEG larger than the limit is decoded at 1/2, 1/4
or 1/8 size (libjpeg's DCT scaling, Pillow's `Image.draft`), so the full bitmap is never held.
High-bit-depth pixels are scaled to 8 bits and transparency is composited onto a neutral grey;
EXIF orientation is applied and every bit of metadata (GPS included) is dropped by re-encoding.
HEIC/HEIF (the iPhone camera's default) decodes with pillow-heif (libheif): only the primary
image, 8 bits per channel, its rotation and mirroring applied (pillow-heif moves EXIF orientation
into those transforms and resets the tag, so it is never applied twice), under the same limits.
"""

import hashlib
import io
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from shared.i18n import Sentence

ALLOWED = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "HEIF": "image/heic"}
# ISO/IEC 23008-12 brands of still HEVC images (`ftyp` major brand): what iPhones and Android
# phones write. AVIF is HEIF with AV1, which this build of libheif does not decode: not listed.
HEIF_BRANDS = {
    b"heic",
    b"heix",
    b"heim",
    b"heis",
    b"hevc",
    b"hevx",
    b"hevm",
    b"hevs",
    b"mif1",
    b"msf1",
    b"mif2",
}
JPEG_DRAFT_SCALES = (2, 4, 8)  # the DCT scalings libjpeg decodes at without the full bitmap
NEUTRAL_BACKGROUND = (128, 128, 128)  # behind transparent pixels: no colour cast, no edge


class ImageRejected(Exception):
    """A refused upload: an HTTP status and a sentence of shared.i18n (`sentence`), in English as
    `message`."""

    def __init__(self, status_code: int, key: str, **values: object):
        self.sentence = Sentence(key, values)
        self.message = self.sentence.render()
        super().__init__(self.message)
        self.status_code = status_code


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
    if head[4:8] == b"ftyp" and head[8:12] in HEIF_BRANDS:
        return "HEIF"
    return None


@cache
def _register_heif() -> None:
    """pillow-heif as Pillow's HEIF plugin, once per process: one decoding thread (uploads are
    decoded in parallel already), no thumbnails, depth or auxiliary images."""
    import pillow_heif

    pillow_heif.options.DECODE_THREADS = 1
    pillow_heif.options.THUMBNAILS = False
    pillow_heif.options.DEPTH_IMAGES = False
    pillow_heif.options.AUX_IMAGES = False
    pillow_heif.register_heif_opener()


@contextmanager
def _without_pillow_bomb_guard() -> Iterator[None]:
    saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


def draft_scale(fmt: str, width: int, height: int, max_pixels: int) -> int | None:
    """The reduction (1, 2, 4 or 8) at which a `fmt` image of width x height px decodes to at most
    `max_pixels`, or None when it cannot: only JPEG decodes reduced (DCT scaling), at most 1/8."""
    if width * height <= max_pixels:
        return 1
    if fmt != "JPEG":
        return None
    for scale in JPEG_DRAFT_SCALES:
        if math.ceil(width / scale) * math.ceil(height / scale) <= max_pixels:
            return scale
    return None


def to_rgb8(img: Image.Image) -> Image.Image:
    """Any Pillow mode as 8-bit RGB: high-bit-depth values scaled (never clipped), transparency
    composited onto NEUTRAL_BACKGROUND (never dropped, which would show whatever colours the
    transparent pixels hold)."""
    if img.mode.startswith("I") or img.mode == "F":  # I;16, I;16B, I;16L, I;16N, I, F
        img = _scale_to_8bit(img)
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        flat = Image.new("RGBA", rgba.size, (*NEUTRAL_BACKGROUND, 255))
        flat.alpha_composite(rgba)
        return flat.convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def _scale_to_8bit(img: Image.Image) -> Image.Image:
    """A single-band high-bit-depth image as mode "L", by the range of its storage type: 16-bit
    modes divide by 257 (65535 -> 255, as libpng's 16-to-8 scaling); "I" by the smallest of 8, 16
    or 31 bits that holds its largest value; "F" as 0..1 when it stays there (else as "I")."""
    values = np.asarray(img).astype(np.float64)
    top = float(values.max()) if values.size else 0.0
    if img.mode.startswith("I;16"):
        full = 65535.0
    elif img.mode == "F" and top <= 1.0:
        full = 1.0
    else:
        full = next(f for f in (255.0, 65535.0, 2.0**31 - 1) if top <= f)
    scaled = np.clip(np.rint(values * (255.0 / full)), 0, 255).astype(np.uint8)
    return Image.fromarray(scaled)


def clean_upload(raw: bytes, *, filename: str, max_bytes: int, max_pixels: int) -> CleanImage:
    """Decode an upload defensively and re-encode it as a metadata-free 8-bit RGB JPEG.

    A JPEG over `max_pixels` is decoded reduced (see draft_scale); other formats over it, and
    JPEG headers too large even at 1/8, are refused. Raises ImageRejected (413 too many bytes,
    415 not JPEG/PNG/WebP/HEIC, 400 too many pixels or unreadable) with a sentence naming the file.
    """
    name = filename or "the file"
    if len(raw) > max_bytes:
        raise ImageRejected(413, "upload.too_large", name=name, mb=f"{max_bytes / 2**20:.0f}")
    if not raw:
        raise ImageRejected(400, "upload.empty", name=name)
    fmt = sniff_format(raw[:16])
    if fmt is None:
        raise ImageRejected(415, "upload.not_image", name=name)
    if fmt == "HEIF":
        _register_heif()
    try:
        # Pillow's own bomb guard would refuse before we can name the size; ours runs right after
        # the header is read and before any pixel is decoded.
        with _without_pillow_bomb_guard(), Image.open(io.BytesIO(raw), formats=[fmt]) as img:
            width, height = img.size  # from the header: nothing decoded yet
            scale = draft_scale(fmt, width, height, max_pixels)
            if scale is None:
                key = "upload.too_many_pixels_jpeg" if fmt == "JPEG" else "upload.too_many_pixels"
                mp = f"{max_pixels / 1e6:.0f}"
                raise ImageRejected(400, key, name=name, width=width, height=height, mp=mp)
            if scale > 1:
                img.draft("RGB", (width // scale, height // scale))
                if img.width * img.height > max_pixels:  # the decoder did not reduce enough
                    raise ImageRejected(400, "upload.not_reducible", name=name, width=width, height=height)
            img.load()  # decodes fully: truncated or corrupt data fails here
            ImageOps.exif_transpose(img, in_place=True)  # no second bitmap when upright already
            rgb = to_rgb8(img)
    except ImageRejected:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise ImageRejected(400, "upload.unreadable", name=name) from None
    out = io.BytesIO()
    rgb.save(out, format="JPEG", quality=95)  # no exif=, so no metadata survives
    data = out.getvalue()
    return CleanImage(data, rgb.width, rgb.height, hashlib.sha256(data).hexdigest())


def open_upright(source: str | Path | BinaryIO) -> Image.Image:
    """A stored photo (already checked at upload) as 8-bit RGB, upright: EXIF orientation applied."""
    with Image.open(source) as im:
        return to_rgb8(ImageOps.exif_transpose(im))
