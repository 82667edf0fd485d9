"""Detectors of the detailer: ultralytics YOLO (ADetailer's face_yolov8n / hand_yolov8n), with
dlib's face detector (shared.faces) as the fallback for faces when no YOLO weights are pulled."""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

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

    def __init__(self, weights: Path | str, name: str = "yolo", device: str | None = None):
        offline_ultralytics()
        from ultralytics import YOLO

        self.model = YOLO(str(weights), task="detect")
        self.name = name
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


def load_detector(kind: Literal["face", "hand"], device: str | None = None) -> Detector | None:
    """ADetailer's YOLO model for `kind` from the model registry; without its weights, dlib for
    faces and None (the pass is skipped) for hands. Other registry errors propagate."""
    from shared.ml.registry import MissingWeights, resolve

    try:
        return YoloDetector(resolve(REGISTRY_NAMES[kind]), name=REGISTRY_NAMES[kind], device=device)
    except MissingWeights as exc:
        if kind == "face":
            log.warning("%s; the face detailer uses dlib's face detector instead", exc)
            return DlibFaceDetector()
        log.warning("%s; the hand detailer pass is skipped", exc)
        return None
