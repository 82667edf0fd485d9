"""`studio generate --pose-photo`: the pose of a real photo drives the portraits; no person -> a
usage error in words, before any model loads."""

import os
import subprocess
import sys
from pathlib import Path

from PIL import Image
from skimage import data

from services.generator.metadata import read_png_metadata

REPO = Path(__file__).resolve().parents[2]


def studio(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", "generate", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO), "MODEL_PRESET": "tiny", "OMP_NUM_THREADS": "1"},
    )  # fmt: skip


def test_generate_with_the_pose_of_a_photo(tmp_path):
    photo, cat = tmp_path / "astronaut.png", tmp_path / "cat.png"
    Image.fromarray(data.astronaut()).save(photo)
    Image.fromarray(data.chelsea()).save(cat)

    refused = studio("--style", "soft-beauty", "--out", str(tmp_path / "no"), "--pose-photo", str(cat))
    assert refused.returncode == 2 and "could not find a person" in refused.stderr
    assert not (tmp_path / "no").exists()

    done = studio(
        "--style", "soft-beauty", "--out", str(tmp_path / "out"), "--pose-photo", str(photo),
        "--seed", "3", "--preset", "tiny", "--device", "cpu",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    (png,) = (tmp_path / "out").glob("*.png")
    parameters, meta = read_png_metadata(png.read_bytes())
    assert meta["pose"] == "photo:astronaut.png" and "Module: openpose" in parameters


def test_a_folder_without_a_lora_is_a_usage_error(tmp_path):
    done = studio("--style", "soft-beauty", "--out", str(tmp_path / "out"), "--likeness", str(tmp_path))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    words = " ".join(done.stderr.replace("│", " ").split())  # rich boxes and wraps the error
    assert "expected one LoRA .safetensors file, found 0" in words
