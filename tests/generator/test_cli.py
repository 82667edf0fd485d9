"""`studio generate --pose-photo`: the pose of a real photo drives the portraits; no person -> a
usage error in words, before any model loads."""

import subprocess

from PIL import Image
from skimage import data

from services.generator.metadata import read_png_metadata
from tests.conftest import studio as run_studio


def studio(*args: str) -> subprocess.CompletedProcess:
    return run_studio("generate", *args)


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
    assert (
        meta["pose"] == "photo:astronaut.png"
        and "Module: none, Model: control_v11p_sd15_openpose [cab727d4]" in parameters
    )


def test_a_folder_without_a_lora_is_a_usage_error(tmp_path):
    done = studio("--style", "soft-beauty", "--out", str(tmp_path / "out"), "--likeness", str(tmp_path))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    words = " ".join(done.stderr.replace("│", " ").split())  # rich boxes and wraps the error
    assert "expected one LoRA .safetensors file, found 0" in words
