"""Turn a user's photos into a training set: one aligned, square face crop per usable photo.

Every photo gets a verdict with a reason a person can act on; the set as a whole is refused when
too few photos are usable, saying how many more are needed.
"""

from __future__ import annotations

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
) -> TrainingSet:
    """Check, align and crop every photo; raise TooFewPhotos when fewer than `min_photos` remain."""
    verdicts: list[PhotoVerdict] = []
    kept: list[tuple[int, Image.Image, faces.Face]] = []
    for i, image in enumerate(images):
        check = faces.check_photo(image, min_face_px=min_face_px, blur_min_variance=blur_min_variance)
        if check.accepted:
            kept.append((i, image, check.face))
        else:
            verdicts.append(PhotoVerdict(i, False, check.reason_code, check.reason, check.face))

    embeddings = np.stack([faces.face_embedding(im, f) for _, im, f in kept]) if kept else None
    # The same rule as the photos worker's check of the set (shared/identity.py).
    distances: list[float | None] = [None] * len(kept)
    others = [False] * len(kept)
    if kept:
        same = identity.check_identity(embeddings, identity_threshold)
        if same.decided:
            distances, others = [float(d) for d in same.distances], [bool(o) for o in same.others]
    crops, keep_rows = [], []
    for row, ((i, image, face), distance, other) in enumerate(zip(kept, distances, others, strict=True)):
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
