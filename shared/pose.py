"""The pose contract shared by the services: OpenPose COCO-18 keypoints, their JSON, the skeleton image.

A pose document is OpenPose JSON: `people[].pose_keypoints_2d` = 18 x (x, y, confidence) in pixels
of a `canvas_width` x `canvas_height` canvas, keypoints in the order of `KEYPOINTS`
(OpenPose's COCO-18 body model, which the OpenPose ControlNet was trained on). The skeleton is drawn
exactly like ControlNet's OpenPose annotator (same limbs, colours, stick width and joint radius).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

KEYPOINTS = (
    "nose", "neck", "right_shoulder", "right_elbow", "right_wrist", "left_shoulder",
    "left_elbow", "left_wrist", "right_hip", "right_knee", "right_ankle", "left_hip",
    "left_knee", "left_ankle", "right_eye", "left_eye", "right_ear", "left_ear",
)  # fmt: skip
# ControlNet's annotator (lllyasviel/ControlNet annotator/openpose/util.py): limbs as 1-based
# keypoint pairs, one colour per limb and per joint.
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

Point = tuple[float, float]


class PoseError(ValueError):
    """A pose document or template that cannot be used; the message says why."""


@dataclass(frozen=True)
class Pose:
    """People's COCO-18 keypoints normalised to 0..1 of their canvas; None where not visible.

    `aspect` is the canvas's width / height: drawing on a canvas of another shape keeps the
    person's proportions (see `place`).
    """

    people: tuple[tuple[Point | None, ...], ...]
    aspect: float = 1.0

    def to_openpose_json(self, width: int, height: int) -> dict:
        """OpenPose JSON on a `width` x `height` canvas (give the source canvas's size)."""
        people = []
        for person in self.people:
            flat: list[float] = []
            for point in person:
                flat += [0.0, 0.0, 0.0] if point is None else [point[0] * width, point[1] * height, 1.0]
            people.append({"pose_keypoints_2d": flat})
        return {"canvas_width": width, "canvas_height": height, "people": people}


def parse_openpose_json(data: dict, min_confidence: float = 0.05) -> Pose:
    """A Pose from OpenPose JSON; raises PoseError naming what is wrong."""
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
    except (KeyError, TypeError, ZeroDivisionError) as exc:
        raise PoseError(f"not an OpenPose keypoint document: missing {exc}") from exc
    if not people:
        raise PoseError("the pose has no people")
    return Pose(tuple(people), aspect=width / height)


def place(pose: Pose, width: int, height: int) -> list[list[tuple[float, float] | None]]:
    """Pixel positions of every keypoint on a `width` x `height` canvas, proportions kept.

    ControlNet's "Resize and Fill" (A1111 sd-webui-controlnet): the pose's canvas is scaled by one
    factor so that it fits inside the target, never a different scale per axis. Along the axis that
    gets padding, the people's bounding box is centred (kept inside the canvas); along the other,
    positions are as on the source canvas. Returns people x 18 x (x, y) pixels or None.
    """
    scale = min(width / pose.aspect, float(height))  # pixels per source-canvas height
    visible = [p for person in pose.people for p in person if p is not None]
    offsets = []
    for axis, target, extent in ((0, width, pose.aspect * scale), (1, height, scale)):
        offset = (target - extent) / 2
        if visible and target - extent > 0.5:  # padded axis: centre on the people
            unit = pose.aspect if axis == 0 else 1.0  # source units along this axis
            low = min(p[axis] for p in visible) * unit * scale
            high = max(p[axis] for p in visible) * unit * scale
            offset = target / 2 - (low + high) / 2
            offset = min(max(offset, -low), target - high) if high - low <= target else offset
        offsets.append(offset)
    return [
        [
            None if p is None else (p[0] * pose.aspect * scale + offsets[0], p[1] * scale + offsets[1])
            for p in person
        ]
        for person in pose.people
    ]


def draw_pose(pose: Pose, width: int, height: int) -> Image.Image:
    """The OpenPose skeleton image (RGB, black background, `width` x `height`) that the OpenPose
    ControlNet expects, drawn like ControlNet's annotator; proportions kept (see `place`)."""
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    for person in place(pose, width, height):
        for (a, b), color in zip(LIMBS, COLORS, strict=False):
            p, q = person[a - 1], person[b - 1]
            if p is None or q is None:
                continue
            length = math.hypot(p[0] - q[0], p[1] - q[1])
            angle = math.degrees(math.atan2(p[1] - q[1], p[0] - q[0]))
            polygon = cv2.ellipse2Poly(
                (int((p[0] + q[0]) / 2), int((p[1] + q[1]) / 2)),
                (int(length / 2), STICK_WIDTH),
                int(angle),
                0,
                360,
                1,
            )
            cv2.fillConvexPoly(canvas, polygon, [int(c * 0.6) for c in color])
        for point, color in zip(person, COLORS, strict=True):
            if point is not None:
                cv2.circle(canvas, (int(point[0]), int(point[1])), JOINT_RADIUS, color, thickness=-1)
    return Image.fromarray(canvas)


def draw_over(photo: Image.Image, pose: Pose, max_side: int = 768) -> Image.Image:
    """A preview: the skeleton over a dimmed copy of the photo (RGB, longest side <= `max_side`)."""
    preview = photo.convert("RGB")
    preview.thumbnail((max_side, max_side))
    skeleton = draw_pose(pose, preview.width, preview.height)
    mask = Image.fromarray((np.asarray(skeleton).max(axis=2) > 0).astype(np.uint8) * 255)
    dimmed = Image.blend(preview, Image.new("RGB", preview.size), 0.45)
    dimmed.paste(skeleton, mask=mask)
    return dimmed
