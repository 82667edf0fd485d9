"""shared.faces on real photos from skimage.data (the astronaut's face is ~90 px wide)."""

import time

import numpy as np
import pytest
from PIL import Image, ImageFilter
from skimage import data

from shared import faces

MIN_PX = 80  # the astronaut's face box is 87-91 px
BLUR = 40.0


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    return Image.fromarray(data.astronaut())


def check(image: Image.Image) -> faces.PhotoCheck:
    return faces.check_photo(image, min_face_px=MIN_PX, blur_min_variance=BLUR)


def test_astronaut_is_accepted(astronaut):
    faces.detect_faces(astronaut)  # load the models outside the timing
    start = time.perf_counter()
    result = check(astronaut)
    assert time.perf_counter() - start < 1.0
    assert result.accepted and result.reason_code is None
    face = result.face
    x0, y0, x1, y1 = face.box
    assert 170 <= x0 <= 185 and 70 <= y0 <= 90 and 85 <= face.size_px <= 95
    assert len(face.landmarks) == 5
    # The landmarks lie inside the box: eyes in the upper half, nose below them.
    assert all(x0 <= x <= x1 and y0 <= y <= y1 for x, y in face.landmarks)
    assert face.landmarks[4][1] > max(y for _, y in face.landmarks[:4])
    assert face.sharpness > 4 * BLUR
    assert face.to_json()["size_px"] == face.size_px


def test_cat_and_grey_camera_have_no_face():
    for image in (Image.fromarray(data.chelsea()), Image.fromarray(data.camera())):
        result = check(image)
        assert (result.accepted, result.reason_code) == (False, "no_face")
        assert "No face" in result.reason


def test_two_people(astronaut):
    two = Image.new("RGB", (1024, 512))
    two.paste(astronaut, (0, 0))
    two.paste(astronaut, (512, 0))
    result = check(two)
    assert result.reason_code == "multiple_faces"
    assert result.reason == "Two faces found: use a photo of you alone."


def test_small_face(astronaut):
    result = check(astronaut.resize((256, 256)))
    assert result.reason_code == "face_too_small"
    assert result.reason.startswith(f"Face too small: {result.face.size_px} px, need {MIN_PX} px.")


def test_blurry_face(astronaut):
    result = check(astronaut.filter(ImageFilter.GaussianBlur(2)))
    assert result.reason_code == "too_blurry"
    assert result.face.sharpness < BLUR


def test_sharpness_does_not_depend_on_resolution(astronaut):
    big = astronaut.resize((2048, 2048), Image.LANCZOS)
    small_face, big_face = faces.detect_faces(astronaut)[0], faces.detect_faces(big)[0]
    assert big_face.size_px > 3.5 * small_face.size_px
    assert 0.5 < big_face.sharpness / small_face.sharpness < 1.5
    assert check(big).accepted


def test_embedding_same_person_is_close(astronaut):
    face = faces.detect_faces(astronaut)[0]
    emb = faces.face_embedding(astronaut, face)
    assert emb.shape == (128,) and emb.dtype == np.float32
    flipped = astronaut.transpose(Image.Transpose.FLIP_LEFT_RIGHT).resize((700, 700))
    emb2 = faces.face_embedding(flipped, faces.detect_faces(flipped)[0])
    assert faces.face_distance(emb, emb2) < 0.3
