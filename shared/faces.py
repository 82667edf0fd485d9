"""Faces: detection, 5-point landmarks, 128-d identity embeddings and a photo check.

dlib's HOG detector, its 5-point landmark model and its ResNet face embedding, with the
weights shipped by the `face-recognition-models` package (the 68-point model is never
used: its licence is non-commercial). Models load lazily, once per process.
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from shared.i18n import Sentence

# Detection runs on a copy whose longer side is at most this (HOG cost grows with pixels);
# small images are upsampled once so faces of ~40 px are still found.
DETECT_MAX_SIDE = 1024
UPSAMPLE_BELOW_SIDE = 640
# A face smaller than this fraction of the largest face is background, not a second person.
SECONDARY_FACE_RATIO = 0.4
# Faces below this HOG score are dropped: dlib's default (0.0) lets textured patches through
# (the mission patch on skimage's astronaut scores 0.06-0.15, real faces 1.0-1.5).
DETECT_MIN_SCORE = 0.5
# The face crop is resized to this square before measuring blur. At the minimum face size
# every accepted face is downscaled, so the measure is blur relative to the face, whatever the
# photo's resolution (astronaut: ~190-250 sharp, ~20-33 after a blur of 1% of the face).
SHARPNESS_SIZE = 128
_lock = threading.Lock()


@dataclass(frozen=True)
class Face:
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in image pixels
    landmarks: list[tuple[float, float]]  # 5 points: eye corners (2 per eye) and the nose base
    size_px: int  # the shorter side of the box
    sharpness: float  # variance of the Laplacian of the face crop resized to SHARPNESS_SIZE

    @classmethod
    def from_json(cls, data: dict) -> Face:
        """The face `to_json` wrote (a photo row's `face`); KeyError/TypeError/ValueError if not."""
        x0, y0, x1, y1 = (int(v) for v in data["box"])
        landmarks = [(float(x), float(y)) for x, y in data["landmarks"]]
        return cls((x0, y0, x1, y1), landmarks, int(data["size_px"]), float(data["sharpness"]))

    def to_json(self) -> dict:
        return {
            "box": list(self.box),
            "landmarks": [[round(x, 2), round(y, 2)] for x, y in self.landmarks],
            "size_px": self.size_px,
            "sharpness": round(self.sharpness, 2),
        }


@dataclass(frozen=True)
class PhotoCheck:
    accepted: bool
    # "too_small" | "no_face" | "multiple_faces" | "face_too_small" | "too_blurry" | "too_dark"
    # | "face_covered"
    reason_code: str | None
    reason: str | None  # a sentence for a person, in English
    face: Face | None
    sentence: Sentence | None = None  # the reason as a shared.i18n sentence (any language)
    embedding: np.ndarray | None = None  # (128,) float32, when asked for and accepted


def _models_dir() -> Path:
    # Located without importing the package: its __init__ needs pkg_resources (setuptools < 81).
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("face-recognition-models is not installed: pip install it")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


@cache
def _models():
    import dlib

    models = _models_dir()
    with _lock:
        return (
            dlib.get_frontal_face_detector(),
            dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat")),
            dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat")),
        )


def _rgb(image: Image.Image) -> np.ndarray:
    """(h, w, 3) uint8, C-contiguous; an RGB image is not copied first (a 40 MP photo is 120 MB)."""
    return np.asarray(image if image.mode == "RGB" else image.convert("RGB"), dtype=np.uint8)


def sharpness(rgb: np.ndarray, box: tuple[int, int, int, int]) -> float:
    """Variance of the Laplacian of the face crop at a fixed size, so it does not depend on
    the resolution of the photo."""
    x0, y0, x1, y1 = box
    h, w = rgb.shape[:2]
    crop = rgb[max(y0, 0) : min(y1, h), max(x0, 0) : min(x1, w)]
    if crop.size == 0:
        return 0.0
    grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    grey = cv2.resize(grey, (SHARPNESS_SIZE, SHARPNESS_SIZE), interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def _detect(rgb: np.ndarray, upsample: bool | None = None) -> list[Face]:
    import dlib

    detector, predictor, _ = _models()
    h, w = rgb.shape[:2]
    scale = min(1.0, DETECT_MAX_SIDE / max(h, w))
    small = (
        rgb
        if scale == 1.0
        else cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    )
    if upsample is None:
        upsample = max(small.shape[:2]) < UPSAMPLE_BELOW_SIDE
    faces = []
    rects, _scores, _ = detector.run(small, int(upsample), DETECT_MIN_SCORE)
    for r in rects:
        rect = dlib.rectangle(
            round(r.left() / scale),
            round(r.top() / scale),
            round(r.right() / scale),
            round(r.bottom() / scale),
        )
        shape = predictor(rgb, rect)
        box = (max(rect.left(), 0), max(rect.top(), 0), min(rect.right(), w), min(rect.bottom(), h))
        faces.append(
            Face(
                box=box,
                landmarks=[(float(p.x), float(p.y)) for p in shape.parts()],
                size_px=int(min(box[2] - box[0], box[3] - box[1])),
                sharpness=sharpness(rgb, box),
            )
        )
    return sorted(faces, key=lambda f: f.size_px, reverse=True)


def detect_faces(image: Image.Image, upsample: bool | None = None) -> list[Face]:
    """Every face in the image, largest first. Not from several threads at once: dlib's models are
    shared, and concurrent calls crashed the process (segfault, 2026-12-07).

    `upsample`: HOG on an image upsampled 2x, which finds faces down to ~40 px instead of ~80 px
    (dlib's 80x80 detection window) at about 3x the time; None (the default) upsamples an image
    whose longer side is under UPSAMPLE_BELOW_SIDE px."""
    return _detect(_rgb(image), upsample)


def face_embedding(image: Image.Image, face: Face) -> np.ndarray:
    """The 128-d dlib identity embedding of `face` (same person: distance < ~0.6)."""
    import dlib

    _, _, encoder = _models()
    rect = dlib.rectangle(*face.box)
    points = dlib.points([dlib.point(round(x), round(y)) for x, y in face.landmarks])
    shape = dlib.full_object_detection(rect, points)
    return np.asarray(encoder.compute_face_descriptor(_rgb(image), shape), dtype=np.float32)


def face_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)))


def check_photo(
    image: Image.Image, *, min_face_px: int, blur_min_variance: float, embed: bool = False
) -> PhotoCheck:
    """Is this a usable training photo: exactly one clear face, large and sharp enough.

    A photo narrower or lower than `min_face_px` cannot hold a face that large: it is refused as
    "too_small" before any detection (a detector finds nothing there and "no face" misleads).
    When dlib finds no face, shared.photo_diagnosis tells why (too dark, too blurry, eyes covered,
    face too small, or really no face). `embed`: also compute the accepted face's 128-d embedding.
    """
    if min(image.size) < min_face_px:
        width, height = image.size
        return _refused("too_small", None, width=width, height=height, min=min_face_px)
    faces = detect_faces(image)
    if not faces:
        from shared.photo_diagnosis import diagnose_no_face  # MediaPipe loads only when needed

        why = diagnose_no_face(image, min_face_px=min_face_px, blur_min_variance=blur_min_variance)
        return PhotoCheck(False, why.reason_code, why.sentence.render(), None, why.sentence)
    main = faces[0]
    others = [f for f in faces[1:] if f.size_px >= SECONDARY_FACE_RATIO * main.size_px]
    if others:
        count = 1 + len(others)
        return _refused("multiple_faces", main, count=count, word=_count_word(count))
    if main.size_px < min_face_px:
        values = {"size": main.size_px, "need": min_face_px}
        return _refused("face_too_small", main, key="photo.face_too_small_px", **values)
    if main.sharpness < blur_min_variance:
        return _refused(
            "too_blurry",
            main,
            key="photo.face_blurry_measured",
            sharpness=f"{main.sharpness:.0f}",
            need=f"{blur_min_variance:.0f}",
        )
    embedding = face_embedding(image, main) if embed else None
    return PhotoCheck(True, None, None, main, None, embedding)


def _refused(code: str, face: Face | None, key: str | None = None, **values: object) -> PhotoCheck:
    sentence = Sentence(key or f"photo.{code}", values)
    return PhotoCheck(False, code, sentence.render(), face, sentence)


def _count_word(n: int) -> str:
    words = {2: "Two", 3: "Three", 4: "Four", 5: "Five"}
    return words.get(n, str(n))
