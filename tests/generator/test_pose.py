import json

import numpy as np
import pytest

from services.generator.pose import (
    COLORS,
    POSES_DIR,
    PoseError,
    draw_pose,
    load_pose,
    parse_openpose_json,
    pose_from_coco17,
)


def test_templates_load_and_render_standard_skeleton():
    names = sorted(p.stem for p in POSES_DIR.glob("*.json"))
    assert len(names) >= 4
    for name in names:
        pose = load_pose(name)
        image = np.asarray(draw_pose(pose, 512, 768))
        assert image.shape == (768, 512, 3)
        for point, color in zip(pose.people[0], COLORS, strict=True):
            if point is not None:  # every visible joint is a dot of its standard colour
                x, y = int(point[0] * 512), int(point[1] * 768)
                assert tuple(image[y, x]) == color, (name, point)
    image = np.asarray(draw_pose(load_pose("headshot_front"), 512, 768))
    # the neck-to-right-shoulder limb is drawn in 60 % of red, halfway between the joints
    assert tuple(image[412, 201]) == (153, 0, 0)
    assert (image.reshape(-1, 3) == 0).all(axis=1).mean() > 0.9  # black background


def test_openpose_json_round_trip_and_errors():
    pose = load_pose("half_body_relaxed")
    again = parse_openpose_json(json.loads(json.dumps(pose.to_openpose_json(512, 768))))
    assert again == pose
    with pytest.raises(PoseError, match="54"):
        parse_openpose_json({"canvas_width": 1, "canvas_height": 1, "people": [{"pose_keypoints_2d": [0]}]})
    with pytest.raises(PoseError, match="unknown pose template"):
        load_pose("nope")


def test_coco17_to_openpose18():
    kp = np.zeros((1, 17, 3))
    kp[0, 5] = (300, 200, 0.9)  # left shoulder
    kp[0, 6] = (100, 200, 0.9)  # right shoulder
    kp[0, 0] = (200, 100, 0.9)  # nose
    kp[0, 9] = (0, 0, 0.1)  # left wrist, not confident
    (person,) = pose_from_coco17(kp, 400, 400).people
    assert person[0] == (0.5, 0.25)
    assert person[1] == (0.5, 0.5)  # neck between the shoulders
    assert person[2] == (0.25, 0.5) and person[5] == (0.75, 0.5)
    assert person[7] is None


def test_extract_pose_without_weights_names_the_pull_command(tmp_path, monkeypatch):
    from PIL import Image

    from services.generator.pose import extract_pose
    from shared.config import get_settings
    from shared.ml.registry import MissingWeights

    monkeypatch.setenv("MODEL_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        with pytest.raises(MissingWeights, match="studio models pull yolo_pose"):
            extract_pose(Image.new("RGB", (64, 64)), "yolo_pose")
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
