import json

import numpy as np
import pytest

from services.generator.pose import POSES_DIR, load_pose
from shared.pose import COLORS, PoseError, draw_pose, parse_openpose_json


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
