"""Real face photos for the trainer tests: skimage's astronaut and augmented variants of it."""

import numpy as np
from PIL import Image, ImageEnhance
from skimage import data

MIN_FACE_PX = 80  # the astronaut's face is ~90 px wide in the 512 px photo


def astronaut() -> Image.Image:
    return Image.fromarray(data.astronaut())


def variants(n: int) -> list[Image.Image]:
    """n different photos of the same person: mirrored, rotated, re-framed, re-lit, rescaled."""
    base = astronaut()
    out = []
    for i in range(n):
        im = base.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if i % 2 else base
        im = im.rotate((i % 5 - 2) * 4, resample=Image.BICUBIC, fillcolor=(128, 128, 128))
        left, top = 6 * (i % 4), 5 * (i % 3)
        im = im.crop((left, top, left + 480, top + 480)).resize((520 + 8 * i,) * 2, Image.LANCZOS)
        im = ImageEnhance.Brightness(im).enhance(0.85 + 0.06 * (i % 5))
        out.append(im)
    return out


def other_person() -> Image.Image:
    """A real, different person: an LFW face from skimage (25 px, upscaled, so it is soft)."""
    import cv2

    grey = (data.lfw_subset()[1] * 255).astype(np.uint8)
    grey = cv2.copyMakeBorder(grey, 12, 12, 12, 12, cv2.BORDER_REPLICATE)
    return Image.fromarray(cv2.resize(grey, (392, 392), interpolation=cv2.INTER_CUBIC)).convert("RGB")
