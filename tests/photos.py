"""Test photos made from real pictures that ship with scikit-image (no download)."""

import io

import numpy as np
from PIL import Image, ImageFilter
from skimage import data


def astronaut() -> Image.Image:
    """skimage's astronaut at 2x (1024 px), so the face is the size a phone photo gives (~180 px)."""
    img = Image.fromarray(data.astronaut())
    return img.resize((img.width * 2, img.height * 2), Image.Resampling.LANCZOS)


def jpeg(image: Image.Image, **save: object) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, format="JPEG", quality=92, **save)
    return out.getvalue()


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def astronaut_variants(n: int) -> list[Image.Image]:
    """The same person in n slightly different photos (flip, crop, brightness, small rotation)."""
    base = astronaut()
    out = []
    for i in range(n):
        img = base.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if i % 2 else base
        img = img.rotate((i % 5 - 2) * 3, resample=Image.Resampling.BICUBIC, fillcolor=(128, 128, 128))
        arr = np.asarray(img).astype(np.float32) * (0.85 + 0.05 * (i % 4))
        out.append(Image.fromarray(arr.clip(0, 255).astype(np.uint8)))
    return out


def cat() -> Image.Image:
    return Image.fromarray(data.chelsea())


def camera() -> Image.Image:
    return Image.fromarray(data.camera()).convert("RGB")


def two_people() -> Image.Image:
    a = astronaut()
    both = Image.new("RGB", (a.width * 2, a.height))
    both.paste(a, (0, 0))
    both.paste(a.transpose(Image.Transpose.FLIP_LEFT_RIGHT), (a.width, 0))
    return both


def blurred() -> Image.Image:
    return astronaut().filter(ImageFilter.GaussianBlur(8))
