"""The pose contract (shared.pose) and BlazePose extraction (shared.blazepose) on real photos."""

import math

import numpy as np
import pytest
from PIL import Image
from skimage import data

from shared.blazepose import BLAZEPOSE_FOR_COCO18, PoseRejected, estimate_pose, landmarks_to_coco18
from shared.pose import COLORS, KEYPOINTS, Pose, draw_over, draw_pose, parse_openpose_json

K = {name: i for i, name in enumerate(KEYPOINTS)}
TOL = 0.03  # of the photo's side (15 px on 512)


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    return Image.fromarray(data.astronaut())


@pytest.fixture(scope="module")
def astronaut_pose(astronaut) -> tuple:
    return estimate_pose(astronaut).people[0]


def joint_centres(image: Image.Image) -> dict[str, tuple[float, float]]:
    """Centre of each joint's dot, found by its exact colour in the drawn skeleton."""
    pixels = np.asarray(image)
    out = {}
    for name, color in zip(KEYPOINTS, COLORS, strict=True):
        ys, xs = np.nonzero((pixels == color).all(axis=2))
        if len(xs):
            out[name] = (xs.mean(), ys.mean())
    return out


def near(point, expected, tol=TOL):
    assert point is not None, expected
    assert math.dist(point, expected) <= tol, (point, expected)


def test_mapping_covers_coco18_with_the_neck_between_the_shoulders():
    assert len(BLAZEPOSE_FOR_COCO18) == len(KEYPOINTS) == 18
    landmarks = np.zeros((33, 3))
    landmarks[:, 2] = 1.0
    landmarks[:, 0] = np.arange(33) / 40  # x encodes the BlazePose index
    landmarks[:, 1] = 0.5
    landmarks[11, :2] = (0.7, 0.4)  # left shoulder
    landmarks[12, :2] = (0.3, 0.6)  # right shoulder
    landmarks[16, 2] = 0.4  # right wrist below the visibility threshold
    landmarks[27, :2] = (0.5, 1.2)  # left ankle outside the photo
    points = landmarks_to_coco18(landmarks)
    assert points[K["neck"]] == pytest.approx((0.5, 0.5))
    assert points[K["right_wrist"]] is None and points[K["left_ankle"]] is None
    expected = {"nose": 0, "right_elbow": 14, "left_elbow": 13, "right_hip": 24, "left_knee": 25,
                "right_eye": 5, "left_eye": 2, "right_ear": 8, "left_ear": 7}  # fmt: skip
    for name, index in expected.items():
        assert points[K[name]][0] == pytest.approx(index / 40), name
    landmarks[12, 2] = 0.1  # one shoulder hidden: no neck
    assert landmarks_to_coco18(landmarks)[K["neck"]] is None


def test_astronaut_keypoints(astronaut_pose):
    p = astronaut_pose
    near(p[K["nose"]], (0.44, 0.25))
    near(p[K["right_eye"]], (0.40, 0.20))
    near(p[K["left_eye"]], (0.49, 0.22))
    # her right shoulder is on the image's left (the person's own sides, as in OpenPose)
    near(p[K["right_shoulder"]], (0.22, 0.47))
    near(p[K["left_shoulder"]], (0.60, 0.50))
    near(p[K["neck"]], (0.41, 0.485))
    assert p[K["left_ankle"]] is None and p[K["right_ankle"]] is None  # out of the photo


def test_crops_and_rotations_move_the_keypoints_with_the_photo(astronaut, astronaut_pose):
    nose = np.array(astronaut_pose[K["nose"]]) * 512
    left, top = 50, 60
    crop = astronaut.crop((left, top, 450, 400))
    p = estimate_pose(crop)
    assert p.aspect == pytest.approx(400 / 340)
    got = np.array(p.people[0][K["nose"]]) * (400, 340) + (left, top)
    assert np.abs(got - nose).max() <= 15
    # PIL rotates counter-clockwise: (x, y) -> (y, 512 - x)
    turned = estimate_pose(astronaut.rotate(90, expand=True)).people[0]
    assert np.abs(np.array(turned[K["nose"]]) * 512 - (nose[1], 512 - nose[0])).max() <= 15
    # mirrored, her left shoulder appears where her right one was
    mirrored = estimate_pose(astronaut.transpose(Image.Transpose.FLIP_LEFT_RIGHT)).people[0]
    right = astronaut_pose[K["right_shoulder"]]
    near(mirrored[K["left_shoulder"]], (1 - right[0], right[1]), tol=0.05)


def test_camera_man_and_rejections(astronaut):
    p = estimate_pose(Image.fromarray(data.camera())).people[0]  # greyscale photo
    near(p[K["nose"]], (0.48, 0.33))
    assert p[K["right_shoulder"]][0] < p[K["left_shoulder"]][0]
    with pytest.raises(PoseRejected) as no_one:
        estimate_pose(Image.fromarray(data.chelsea()))  # a cat
    assert no_one.value.code == "no_person" and "could not find a person" in str(no_one.value)
    with pytest.raises(PoseRejected) as head_only:
        estimate_pose(astronaut.crop((150, 30, 300, 200)))
    assert head_only.value.code == "too_little_body" and "shoulders" in head_only.value.reason


def _shoulder_torso_ratio(points: dict) -> float:
    shoulders = math.dist(points["right_shoulder"], points["left_shoulder"])
    hips = np.mean([points["right_hip"], points["left_hip"]], axis=0)
    return shoulders / math.dist(points["neck"], hips)


def test_drawing_on_another_aspect_keeps_proportions():
    from services.generator.pose import load_pose

    pose = load_pose("half_body_relaxed")  # a 512 x 768 template
    same = joint_centres(draw_pose(pose, 512, 768))
    assert _shoulder_torso_ratio(same) == pytest.approx(0.55, abs=0.02)
    assert same["nose"] == pytest.approx((256, 200), abs=1)  # same aspect: positions unchanged
    wide = joint_centres(draw_pose(pose, 768, 512))
    assert _shoulder_torso_ratio(wide) == pytest.approx(0.55, abs=0.02)
    # fit: the 768-high canvas scales to 512 high; centred on the person horizontally
    assert wide["nose"][0] == pytest.approx(384, abs=1)
    assert wide["nose"][1] == pytest.approx(200 * 512 / 768, abs=1)


def test_person_off_centre_is_centred_on_the_padded_axis():
    person = [None] * 18
    person[K["nose"]], person[K["neck"]] = (0.1, 0.2), (0.1, 0.4)
    person[K["right_shoulder"]], person[K["left_shoulder"]] = (0.05, 0.45), (0.15, 0.45)
    pose = Pose((tuple(person),), aspect=1.0)
    drawn = joint_centres(draw_pose(pose, 900, 300))  # a square pose on a wide canvas
    assert drawn["neck"][0] == pytest.approx(450, abs=1)
    assert drawn["neck"][1] == pytest.approx(120, abs=1)  # height axis: as on the source
    assert math.dist(drawn["right_shoulder"], drawn["left_shoulder"]) == pytest.approx(30, abs=1.5)


def test_extracted_pose_json_round_trip_and_preview(astronaut, astronaut_pose):
    pose = Pose((astronaut_pose,), aspect=1.0)
    again = parse_openpose_json(pose.to_openpose_json(512, 512))
    assert again.aspect == 1.0
    for a, b in zip(again.people[0], astronaut_pose, strict=True):
        assert (a is None and b is None) or a == pytest.approx(b)
    preview = draw_over(astronaut, pose, max_side=256)
    assert preview.size == (256, 256)
    nose = np.array(astronaut_pose[K["nose"]]) * 256
    assert joint_centres(preview)["nose"] == pytest.approx(tuple(nose), abs=1.5)


# -- several people (shared.blazepose.find_pose) ------------------------------------------------


def test_two_people_the_most_prominent_is_chosen_and_its_pose_is_on_them():
    from shared.blazepose import find_pose
    from tests.pictures import astronaut as big_astronaut
    from tests.pictures import group_of_two

    one, group = big_astronaut(), group_of_two()  # the 1024 px astronaut on the right, from x=640
    small = one.resize((640, 640))
    found = find_pose(group)
    assert found.people == 2
    x0, _, x1, _ = found.region
    assert (x0 + x1) / 2 > small.width + 0.3 * one.width  # looked for around the larger person
    nose = found.pose.people[0][K["nose"]]
    # Her nose as in the single photo, moved to where she stands in the group photo.
    alone = find_pose(one)
    assert alone.people == 1 and alone.region is None
    expected = alone.pose.people[0][K["nose"]]
    near(
        (nose[0] * group.width, nose[1] * group.height),
        (small.width + expected[0] * one.width, expected[1] * one.height),
        tol=0.03 * one.width,
    )
