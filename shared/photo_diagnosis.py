"""Why no face was found in a photo, in words a person can act on.

dlib's HOG detector (shared/faces.py) needs a well-lit, sharp, frontal face with both eyes
visible; when it finds nothing, "no face" is often untrue. In order:
1. too dark: the photo's luminance (Rec. 601 luma, 0..255) has mean < DARK_MEAN and its 99th
   percentile < DARK_P99 (an underexposed photo, not a dark background behind a lit face);
2. a face that MediaPipe's detector (shared/mp_faces.py, robust to blur and covered eyes) finds:
   too small, too blurry (the Laplacian variance of the face crop, as the accepted-face check), or
   else its features are hidden: eyes covered (sunglasses, hair, a hand) or the face turned away;
3. no face at all but the whole photo is blurred: variance of the Laplacian of the photo at
   BLUR_SIDE px < PHOTO_BLUR_VARIANCE (the usual focus measure, Pech-Pacheco et al. 2000), unless
   the picture is flat (nothing in it to be sharp: a blank wall is "no face", not "blurry");
4. otherwise: no face.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from shared import mp_faces
from shared.faces import sharpness
from shared.i18n import Sentence

DARK_MEAN = 40.0
DARK_P99 = 90.0
BLUR_SIDE = 512  # the photo's longer side when measuring its blur (independent of resolution)
# Sharp photos at 512 px measure 100-1000+ (skimage's astronaut 590, camera 1133, chelsea 147);
# a Gaussian blur of 1% of the side brings them under 10.
PHOTO_BLUR_VARIANCE = 15.0
FLAT_STD = 8.0  # luma standard deviation below which a picture is flat (nothing to be in focus)


@dataclass(frozen=True)
class Diagnosis:
    reason_code: str  # "too_dark" | "face_too_small" | "too_blurry" | "face_covered" | "no_face"
    sentence: Sentence  # shared.i18n: `reason` in English or Korean
    face_box: tuple[int, int, int, int] | None = None  # where MediaPipe saw a face, if it did


def luma_stats(image: Image.Image) -> tuple[float, float]:
    """(mean, 99th percentile) of the photo's luma (PIL "L": ITU-R 601), 0..255, measured on a
    copy at most BLUR_SIDE px long."""
    grey = _grey(image)
    return float(grey.mean()), float(np.percentile(grey, 99))


def photo_blur(image: Image.Image) -> float:
    """Variance of the Laplacian of the whole photo, resized to BLUR_SIDE px on its longer side."""
    return float(cv2.Laplacian(_grey(image), cv2.CV_64F).var())


def _grey(image: Image.Image) -> np.ndarray:
    grey = image.convert("L")
    scale = BLUR_SIDE / max(grey.size)
    if scale < 1:
        grey = grey.resize((round(grey.width * scale), round(grey.height * scale)), Image.Resampling.BOX)
    return np.asarray(grey)


def diagnose_no_face(image: Image.Image, *, min_face_px: int, blur_min_variance: float) -> Diagnosis:
    """The real reason dlib found no face in `image` (RGB), with what to do (see the module doc).

    `min_face_px` and `blur_min_variance` are the accepted-face check's limits (shared.faces)."""
    mean, p99 = luma_stats(image)
    if mean < DARK_MEAN and p99 < DARK_P99:
        return Diagnosis("too_dark", Sentence("photo.too_dark"))
    seen = mp_faces.detect(image)
    if seen:
        face = seen[0]
        size = min(face.width, face.height)
        if size < min_face_px:
            return Diagnosis(
                "face_too_small",
                Sentence("photo.face_too_small_px", {"size": size, "need": min_face_px}),
                face.box,
            )
        rgb = np.asarray(image.convert("RGB"))
        if sharpness(rgb, face.box) < blur_min_variance:
            return Diagnosis("too_blurry", Sentence("photo.too_blurry"), face.box)
        return Diagnosis("face_covered", Sentence("photo.face_covered"), face.box)
    grey = _grey(image)
    # A blank or flat picture (a wall, a screenshot of one colour) is not blurred: it has no face.
    if grey.std() >= FLAT_STD and cv2.Laplacian(grey, cv2.CV_64F).var() < PHOTO_BLUR_VARIANCE:
        return Diagnosis("too_blurry", Sentence("photo.photo_blurry"))
    return Diagnosis("no_face", Sentence("photo.no_face"))
