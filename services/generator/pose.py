"""The OpenPose templates of the styles (`poses/*.json`); the pose contract is in shared.pose."""

from __future__ import annotations

import json
from pathlib import Path

from shared.pose import Pose, PoseError, parse_openpose_json

POSES_DIR = Path(__file__).resolve().parent / "poses"


def load_pose(name: str, directory: Path = POSES_DIR) -> Pose:
    """A template by name; raises PoseError listing the known names."""
    path = directory / f"{name}.json"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in directory.glob("*.json")))
        raise PoseError(f"unknown pose template {name!r}; known: {known}")
    return parse_openpose_json(json.loads(path.read_text()))
