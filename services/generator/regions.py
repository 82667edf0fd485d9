"""Masks and crop regions of "inpaint only masked" (A1111 / ADetailer / Ultimate SD Upscale).

Pure numpy/PIL: a box becomes a dilated, blurred mask; the mask's bounding box plus padding
becomes a crop, grown to the processing aspect ratio; the processed crop goes back through the
blurred mask as alpha, so pixels where the mask is 0 stay exactly as they were.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 (x1, y1 exclusive)


def gaussian_blur(mask: np.ndarray, blur: int) -> np.ndarray:
    """A1111's mask blur: a Gaussian of sigma `blur` with kernel 2 * int(2.5 * blur + 0.5) + 1."""
    if blur <= 0:
        return mask
    k = 2 * int(2.5 * blur + 0.5) + 1
    return cv2.GaussianBlur(mask, (k, k), blur)


def box_mask(size: tuple[int, int], box: Box, dilate: int = 4, blur: int = 4) -> np.ndarray:
    """Float mask 0..1 (H, W): the box filled, dilated by a `dilate` px kernel, then blurred."""
    width, height = size
    mask = np.zeros((height, width), np.uint8)
    x0, y0, x1, y1 = box
    mask[max(y0, 0) : min(y1, height), max(x0, 0) : min(x1, width)] = 255
    if dilate > 0:
        mask = cv2.dilate(mask, np.ones((dilate, dilate), np.uint8), iterations=1)
    return gaussian_blur(mask, blur).astype(np.float32) / 255.0


def mask_bounds(mask: np.ndarray) -> Box:
    ys, xs = np.nonzero(mask > 0)
    if len(xs) == 0:
        raise ValueError("empty mask")
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def pad_box(box: Box, padding: int, size: tuple[int, int]) -> Box:
    width, height = size
    x0, y0, x1, y1 = box
    return (
        max(x0 - padding, 0),
        max(y0 - padding, 0),
        min(x1 + padding, width),
        min(y1 + padding, height),
    )


def grow_to_aspect(box: Box, aspect: float, size: tuple[int, int]) -> Box:
    """Grow `box` (never shrink) towards width/height == `aspect`, inside the image, as A1111's
    expand_crop_region does: more context instead of a distorting resize where possible."""
    width, height = size
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    if w / h < aspect:
        x0, x1 = _grow(x0, x1, round(h * aspect), width)
    else:
        y0, y1 = _grow(y0, y1, round(w / aspect), height)
    return x0, y0, x1, y1


def _grow(a: int, b: int, want: int, limit: int) -> tuple[int, int]:
    want = min(want, limit)
    extra = want - (b - a)
    a -= extra // 2
    b += extra - extra // 2
    if a < 0:
        b, a = b - a, 0
    if b > limit:
        a, b = a - (b - limit), limit
    return max(a, 0), b


@dataclass(frozen=True)
class MaskedCrop:
    """One region to process: `crop` of the image, its `mask` (full image size, 0..1)."""

    crop: Box
    mask: np.ndarray

    def cut(self, image: Image.Image, size: tuple[int, int]) -> tuple[Image.Image, Image.Image]:
        """The crop and its mask, resized to the processing size."""
        part = image.crop(self.crop).resize(size, Image.Resampling.LANCZOS)
        x0, y0, x1, y1 = self.crop
        mask = Image.fromarray((self.mask[y0:y1, x0:x1] * 255).round().astype(np.uint8))
        return part, mask.resize(size, Image.Resampling.BILINEAR)


def paste(image: Image.Image, processed: Image.Image, region: MaskedCrop) -> Image.Image:
    """Put a processed crop back, using the blurred mask as alpha (exact where mask == 0)."""
    x0, y0, x1, y1 = region.crop
    base = np.asarray(image.convert("RGB")).copy()
    patch = np.asarray(
        processed.convert("RGB").resize((x1 - x0, y1 - y0), Image.Resampling.LANCZOS), np.float32
    )
    alpha = region.mask[y0:y1, x0:x1, None]
    old = base[y0:y1, x0:x1].astype(np.float32)
    mixed = np.clip(np.round(old * (1 - alpha) + patch * alpha), 0, 255).astype(np.uint8)
    keep = alpha[..., 0] <= 0  # bit-exact outside the mask, whatever the rounding
    mixed[keep] = base[y0:y1, x0:x1][keep]
    base[y0:y1, x0:x1] = mixed
    return Image.fromarray(base)


def masked_crop(
    size: tuple[int, int], box: Box, *, dilate: int, blur: int, padding: int, aspect: float = 1.0
) -> MaskedCrop:
    """ADetailer's region for a detection box: blurred mask, padded crop grown to `aspect`."""
    mask = box_mask(size, box, dilate, blur)
    crop = grow_to_aspect(pad_box(mask_bounds(mask), padding, size), aspect, size)
    return MaskedCrop(crop, mask)
