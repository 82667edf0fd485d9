"""OpenPose poses: COCO-18 keypoint templates, the standard skeleton image, and extraction.

Templates are OpenPose JSON (`people[].pose_keypoints_2d` = 18 x (x, y, confidence) on a
`canvas_width` x `canvas_height` canvas). The skeleton is drawn exactly like the OpenPose
annotator of ControlNet (same limbs, colours, stick width and joint radius), which is what the
OpenPose ControlNet was trained on.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

POSES_DIR = Path(__file__).resolve().parent / "poses"
KEYPOINTS = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder",
    "left_elbow", "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip",
    "left_knee", "left_ankle", "right_eye", "left_eye", "right_ear", "left_ear",
)  # fmt: skip
# ControlNet's annotator: limbs as 1-based keypoint pairs, one colour per limb and per joint.
LIMBS = (
    (2, 3), (2, 6), (3, 4), (4, 5), (6, 7), (7, 8), (2, 9), (9, 10), (10, 11), (2, 12),
    (12, 13), (13, 14), (2, 1), (1, 15), (15, 17), (1, 16), (16, 18),
)  # fmt: skip
COLORS = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)  # fmt: skip
STICK_WIDTH = 4
JOINT_RADIUS = 4
# COCO-17 (YOLO pose) index of each OpenPose-18 keypoint; the neck is the shoulders' midpoint.
_COCO17_FOR_OPENPOSE = (0, None, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)


class PoseError(ValueError):
    pass


@dataclass(frozen=True)
class Pose:
    """People's keypoints normalised to 0..1; None where a keypoint is not visible."""

    people: tuple[tuple[tuple[float, float] | None, ...], ...]

    def to_openpose_json(self, width: int, height: int) -> dict:
        people = []
        for person in self.people:
            flat: list[float] = []
            for point in person:
                flat += [0.0, 0.0, 0.0] if point is None else [point[0] * width, point[1] * height, 1.0]
            people.append({"pose_keypoints_2d": flat})
        return {"canvas_width": width, "canvas_height": height, "people": people}


def parse_openpose_json(data: dict, min_confidence: float = 0.05) -> Pose:
    try:
        width, height = float(data["canvas_width"]), float(data["canvas_height"])
        people = []
        for person in data["people"]:
            flat = person["pose_keypoints_2d"]
            if len(flat) != 18 * 3:
                raise PoseError(f"pose_keypoints_2d has {len(flat)} values, need 54 (COCO-18)")
            people.append(
                tuple(
                    (flat[i] / width, flat[i + 1] / height) if flat[i + 2] >= min_confidence else None
                    for i in range(0, 54, 3)
                )
            )
    except (KeyError, TypeError) as exc:
        raise PoseError(f"not an OpenPose keypoint document: missing {exc}") from exc
    if not people:
        raise PoseError("the pose has no people")
    return Pose(tuple(people))


def load_pose(name: str, directory: Path = POSES_DIR) -> Pose:
    path = directory / f"{name}.json"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in directory.glob("*.json")))
        raise PoseError(f"unknown pose template {name!r}; known: {known}")
    return parse_openpose_json(json.loads(path.read_text()))


def draw_pose(pose: Pose, width: int, height: int) -> Image.Image:
    """The OpenPose skeleton image (black background) that the OpenPose ControlNet expects."""
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    for person in pose.people:
        for (a, b), color in zip(LIMBS, COLORS, strict=False):
            p, q = person[a - 1], person[b - 1]
            if p is None or q is None:
                continue
            x = np.array([p[0], q[0]]) * width
            y = np.array([p[1], q[1]]) * height
            length = math.hypot(x[0] - x[1], y[0] - y[1])
            angle = math.degrees(math.atan2(y[0] - y[1], x[0] - x[1]))
            polygon = cv2.ellipse2Poly(
                (int(x.mean()), int(y.mean())),
                (int(length / 2), STICK_WIDTH),
                int(angle),
                0,
                360,
                1,
            )
            cv2.fillConvexPoly(canvas, polygon, [int(c * 0.6) for c in color])
        for point, color in zip(person, COLORS, strict=True):
            if point is not None:
                center = (int(point[0] * width), int(point[1] * height))
                cv2.circle(canvas, center, JOINT_RADIUS, color, thickness=-1)
    return Image.fromarray(canvas)


def pose_from_coco17(keypoints: np.ndarray, width: int, height: int, min_conf: float = 0.3) -> Pose:
    """Convert YOLO-pose output (people x 17 x (x, y, conf), pixels) to OpenPose-18."""
    people = []
    for person in np.asarray(keypoints, dtype=np.float64):
        visible = [(x / width, y / height) if c >= min_conf else None for x, y, c in person]
        points = []
        for index in _COCO17_FOR_OPENPOSE:
            if index is not None:
                points.append(visible[index])
            else:
                left, right = visible[5], visible[6]
                points.append(
                    None if left is None or right is None
                    else ((left[0] + right[0]) / 2, (left[1] + right[1]) / 2)
                )  # fmt: skip
        people.append(tuple(points))
    return Pose(tuple(people))


def extract_pose(image: Image.Image, model_name: str = "yolo_pose") -> Pose:
    """The pose of the people in a reference photo, with an ultralytics YOLO pose model.

    Raises `MissingWeights` (from the model registry) when the pose weights are not pulled.
    """
    from ultralytics import YOLO

    from shared.ml.registry import resolve

    model = YOLO(str(resolve(model_name)))
    result = model.predict(image.convert("RGB"), verbose=False)[0]
    if result.keypoints is None or len(result.keypoints) == 0:
        raise PoseError("no person found in the reference photo")
    return pose_from_coco17(result.keypoints.data.cpu().numpy(), image.width, image.height)
