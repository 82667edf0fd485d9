"""Turn a user's photos into a training set: one aligned, square face crop per usable photo.

Every photo gets a verdict with a reason a person can act on; the set as a whole is refused when
too few photos are usable, saying how many more are needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from shared import faces, identity
from shared.i18n import Sentence

# The crop is this many inter-eye distances wide, with the eyes at EYE_LINE of its height:
# head, hair and a little of the shoulders, as in the portraits we generate.
CROP_EYE_DISTANCES = 5.5
EYE_LINE = 0.42


class TooFewPhotos(Exception):
    code = "too_few_photos"

    def __init__(self, usable: int, needed: int, verdicts: list[PhotoVerdict]):
        self.usable, self.needed, self.verdicts = usable, needed, verdicts
        self.sentence = Sentence(
            "job.too_few_photos", {"count": usable, "more": needed - usable, "needed": needed}
        )
        super().__init__(self.sentence.render())


@dataclass(frozen=True)
class PhotoVerdict:
    index: int
    accepted: bool
    reason_code: str | None  # faces.check_photo codes, or "identity_mismatch"
    reason: str | None
    face: faces.Face | None = None
    identity_distance: float | None = None

    def to_json(self) -> dict:
        return {
            "index": self.index,
            "accepted": self.accepted,
            "reason_code": self.reason_code,
            "reason": self.reason,
            "identity_distance": self.identity_distance,
        }


@dataclass(frozen=True)
class StoredCheck:
    """An accepted photo's face check as the photos worker stored it (the row's `face` and
    `embedding`, computed on the same stored image): the trainer aligns with it instead of
    detecting the face and computing its embedding again (about 0.25 s of CPU a photo)."""

    face: faces.Face
    embedding: np.ndarray  # (128,) float32 dlib embedding


def _still_passes(image: Image.Image, check: StoredCheck, min_face_px: int, blur_min_variance: float) -> bool:
    """Whether a stored check holds for this image under today's thresholds (a setting may have
    changed since the upload); else the photo is checked again, which gives the reason."""
    x0, y0, x1, y1 = check.face.box
    width, height = image.size
    return (
        0 <= x0 < x1 <= width
        and 0 <= y0 < y1 <= height
        and min(width, height) >= min_face_px
        and check.face.size_px >= min_face_px
        and check.face.sharpness >= blur_min_variance
        and check.embedding.shape == (128,)
    )


@dataclass
class TrainingSet:
    crops: list[Image.Image]  # aligned, square, `size` px
    embeddings: np.ndarray  # (n, 128) identity embeddings of the accepted photos
    verdicts: list[PhotoVerdict]
    trigger_word: str
    class_word: str

    @property
    def caption(self) -> str:
        return caption(self.trigger_word, self.class_word)


def caption(trigger_word: str, class_word: str) -> str:
    return f"a photo of {trigger_word} {class_word}"


def align_face(image: Image.Image, face: faces.Face, size: int) -> Image.Image:
    """Rotate so the eyes are level, scale by the eye distance and crop a square of `size` px."""
    pts = np.asarray(face.landmarks, dtype=np.float64)
    eye_a, eye_b = pts[0:2].mean(axis=0), pts[2:4].mean(axis=0)  # dlib 5-point: 2 per eye, nose
    left, right = sorted((eye_a, eye_b), key=lambda p: p[0])
    dx, dy = right - left
    distance = float(np.hypot(dx, dy))
    if distance < 1:
        raise ValueError("eye landmarks coincide")
    scale = size / (CROP_EYE_DISTANCES * distance)
    angle = np.degrees(np.arctan2(dy, dx))
    centre = (left + right) / 2
    matrix = cv2.getRotationMatrix2D((float(centre[0]), float(centre[1])), angle, scale)
    # Move the eye midpoint to (size/2, EYE_LINE*size).
    matrix[:, 2] += np.array([size / 2, EYE_LINE * size]) - centre
    rgb = np.asarray(image.convert("RGB"))
    out = cv2.warpAffine(
        rgb,
        matrix,
        (size, size),
        flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC,
        borderMode=cv2.BORDER_REPLICATE,
    )
    return Image.fromarray(out)


def build_training_set(
    images: list[Image.Image],
    *,
    class_word: str,
    size: int,
    min_face_px: int,
    blur_min_variance: float,
    min_photos: int,
    trigger_word: str,
    identity_threshold: float = identity.SAME_PERSON_DISTANCE,
    stored: Sequence[StoredCheck | None] | None = None,
) -> TrainingSet:
    """Check, align and crop every photo; raise TooFewPhotos when fewer than `min_photos` remain.

    `stored`: one entry per image, the photos worker's accepted check of it or None. A stored
    check that still passes today's thresholds is used as it is; other photos are checked here.
    Raises ValueError when `stored` is not as long as `images`."""
    if stored is not None and len(stored) != len(images):
        raise ValueError(f"{len(stored)} stored checks for {len(images)} photos")
    verdicts: list[PhotoVerdict] = []
    kept: list[tuple[int, Image.Image, faces.Face, np.ndarray]] = []
    for i, image in enumerate(images):
        known = stored[i] if stored is not None else None
        if known is not None and _still_passes(image, known, min_face_px, blur_min_variance):
            kept.append((i, image, known.face, known.embedding))
            continue
        check = faces.check_photo(
            image, min_face_px=min_face_px, blur_min_variance=blur_min_variance, embed=True
        )
        if check.accepted and check.face is not None and check.embedding is not None:
            kept.append((i, image, check.face, check.embedding))
        else:
            verdicts.append(PhotoVerdict(i, False, check.reason_code, check.reason, check.face))

    embeddings = np.stack([e for *_, e in kept]).astype(np.float32) if kept else None
    # The same rule as the photos worker's check of the set (shared/identity.py).
    distances: list[float | None] = [None] * len(kept)
    others = [False] * len(kept)
    if kept:
        same = identity.check_identity(embeddings, identity_threshold)
        if same.decided:
            distances, others = [float(d) for d in same.distances], [bool(o) for o in same.others]
    crops, keep_rows = [], []
    for row, ((i, image, face, _), distance, other) in enumerate(zip(kept, distances, others, strict=True)):
        if other:
            reason = Sentence("photo.identity_mismatch").render()
            verdicts.append(PhotoVerdict(i, False, "identity_mismatch", reason, face, round(distance, 3)))
            continue
        verdicts.append(PhotoVerdict(i, True, None, None, face, distance and round(distance, 3)))
        crops.append(align_face(image, face, size))
        keep_rows.append(row)
    verdicts.sort(key=lambda v: v.index)
    if len(crops) < min_photos:
        raise TooFewPhotos(len(crops), min_photos, verdicts)
    return TrainingSet(
        crops=crops,
        embeddings=embeddings[keep_rows],
        verdicts=verdicts,
        trigger_word=trigger_word,
        class_word=class_word,
    )
