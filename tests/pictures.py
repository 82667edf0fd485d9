"""Test photos made from real pictures that ship with scikit-image (no download)."""

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
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


def heic(image: Image.Image, exif: bytes | None = None, quality: int = 80) -> bytes:
    """A real HEIC file (HEVC in HEIF, as an iPhone writes), encoded with pillow-heif's libheif + x265."""
    import pillow_heif

    out = io.BytesIO()
    heif = pillow_heif.from_pillow(image.convert("RGB"))
    heif.save(out, quality=quality, **({"exif": exif} if exif else {}))
    return out.getvalue()


def grace_hopper() -> Image.Image:
    """A real portrait of another person: Grace Hopper, shipped with matplotlib (sample_data).
    Her face is ~186 px in the 512x600 photo; dlib puts her 0.70 from the astronaut."""
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    return Image.open(path).convert("RGB")


def grace_hopper_variants(n: int) -> list[Image.Image]:
    """n different photos of Grace Hopper: mirrored, re-lit, rescaled."""
    base = grace_hopper()
    out = []
    for i in range(n):
        img = base.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if i % 2 else base
        img = img.resize((round(img.width * (1 + 0.15 * i)), round(img.height * (1 + 0.15 * i))))
        arr = np.asarray(img).astype(np.float32) * (0.9 + 0.05 * i)
        out.append(Image.fromarray(arr.clip(0, 255).astype(np.uint8)))
    return out


def too_dark() -> Image.Image:
    """The astronaut photographed far too dark (about 4 stops under)."""
    return Image.fromarray((np.asarray(astronaut()) * 0.05).astype(np.uint8))


def eyes_covered() -> Image.Image:
    """The astronaut with dark sunglasses drawn over her eyes."""
    img = astronaut()
    draw = ImageDraw.Draw(img)
    draw.ellipse((372, 180, 448, 236), fill=(15, 15, 20))
    draw.ellipse((460, 180, 536, 236), fill=(15, 15, 20))
    draw.rectangle((440, 200, 470, 208), fill=(15, 15, 20))
    return img


def group_of_two() -> Image.Image:
    """Two people side by side: a smaller one on the left (640 px), the most prominent one on the
    right (the 1024 px astronaut, from x = 640)."""
    one = astronaut()
    small = one.resize((640, 640), Image.Resampling.LANCZOS)
    group = Image.new("RGB", (one.width + small.width, one.height), (128, 128, 128))
    group.paste(small, (0, one.height - small.height))
    group.paste(one, (small.width, 0))
    return group
