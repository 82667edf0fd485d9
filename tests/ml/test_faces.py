"""shared.faces on real photos from skimage.data (the astronaut's face is ~90 px wide)."""

import time

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter
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


def test_cat_has_no_face_and_the_cameraman_a_small_one():
    result = check(Image.fromarray(data.chelsea()))
    assert (result.accepted, result.reason_code) == (False, "no_face")
    assert "No face" in result.reason
    # dlib misses the cameraman's small, turned face; MediaPipe sees it: "too small", not "no face".
    result = check(Image.fromarray(data.camera()))
    assert (result.accepted, result.reason_code) == (False, "face_too_small")
    assert result.reason.startswith("Face too small:") and f"need {MIN_PX} px" in result.reason


def test_two_people(astronaut):
    two = Image.new("RGB", (1024, 512))
    two.paste(astronaut, (0, 0))
    two.paste(astronaut, (512, 0))
    result = check(two)
    assert result.reason_code == "multiple_faces"
    assert result.reason == "Two faces found: use a photo of you alone."
    assert result.sentence.render("ko") == "얼굴이 2개 있습니다. 나 혼자 나온 사진을 올려 주세요."


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


# -- honest reasons when dlib finds no face (shared/photo_diagnosis.py) -----------------------------
# The astronaut at 2x (~180 px face, as a phone photo gives), checked with the service's limits.


@pytest.fixture(scope="module")
def phone_photo(astronaut) -> Image.Image:
    return astronaut.resize((1024, 1024), Image.LANCZOS)


def service_check(image: Image.Image) -> faces.PhotoCheck:
    return faces.check_photo(image, min_face_px=128, blur_min_variance=BLUR)


def test_a_very_dark_photo_is_too_dark_not_faceless(phone_photo):
    dark = Image.fromarray((np.asarray(phone_photo) * 0.05).astype(np.uint8))  # 3 stops under and more
    result = service_check(dark)
    assert (result.accepted, result.reason_code) == (False, "too_dark")
    assert result.reason.startswith("Photo too dark") and "more light" in result.reason
    assert result.sentence.render("ko").startswith("사진이 너무 어두워서")


def test_a_very_blurry_photo_is_too_blurry_not_faceless(phone_photo):
    for radius in (5, 12):  # dlib finds nothing from radius ~5 on; MediaPipe still sees the face
        result = service_check(phone_photo.filter(ImageFilter.GaussianBlur(radius)))
        assert (result.accepted, result.reason_code) == (False, "too_blurry"), radius
        assert result.reason.startswith("Face too blurry") and "focus" in result.reason
        assert result.sentence.render("ko").startswith("얼굴이 흐립니다")


def test_a_blurred_photo_without_a_detectable_face_says_blurry(phone_photo):
    """Blurred so much that neither detector finds the face: the whole photo's focus measure."""
    result = service_check(phone_photo.filter(ImageFilter.GaussianBlur(40)))
    assert result.reason_code == "too_blurry", result.reason
    assert result.reason.startswith("Photo too blurry to find a face")
    # A flat grey picture has nothing to be sharp: no face, not "blurry".
    assert service_check(Image.new("RGB", (800, 600), (120, 120, 120))).reason_code == "no_face"


@pytest.mark.parametrize("cover", ["bar", "sunglasses", "hand"])
def test_covered_eyes_are_named(phone_photo, cover):
    covered = phone_photo.copy()
    draw = ImageDraw.Draw(covered)
    if cover == "bar":  # a black bar over both eyes
        draw.rectangle((360, 180, 540, 235), fill=(10, 10, 10))
    elif cover == "sunglasses":
        draw.ellipse((372, 180, 448, 236), fill=(15, 15, 20))
        draw.ellipse((460, 180, 536, 236), fill=(15, 15, 20))
        draw.rectangle((440, 200, 470, 208), fill=(15, 15, 20))
    else:  # a skin-coloured hand over the upper face
        draw.rectangle((340, 160, 550, 250), fill=(200, 160, 140))
    result = service_check(covered)
    assert (result.accepted, result.reason_code) == (False, "face_covered")
    assert result.reason.startswith("We can see a face but not its eyes")
    assert "눈이 보이지 않습니다" in result.sentence.render("ko")


def test_the_accepted_face_carries_its_embedding_when_asked(phone_photo):
    result = faces.check_photo(phone_photo, min_face_px=128, blur_min_variance=BLUR, embed=True)
    assert result.accepted and result.embedding.shape == (128,) and result.embedding.dtype == np.float32
    direct = faces.face_embedding(phone_photo, result.face)
    assert faces.face_distance(result.embedding, direct) == 0.0


def test_upsampling_finds_faces_under_the_detection_window_and_can_be_turned_off(astronaut):
    """dlib's HOG window is 80 px: a 56 px face is found only on the 2x upsampled image."""
    small = astronaut.resize((320, 320))  # the ~90 px face becomes ~56 px
    assert len(faces.detect_faces(small)) == 1  # under UPSAMPLE_BELOW_SIDE: upsampled by default
    assert faces.detect_faces(small, upsample=False) == []
    big = faces.detect_faces(astronaut, upsample=False)  # the 90 px face needs no upsampling
    assert len(big) == 1 and abs(big[0].size_px - faces.detect_faces(astronaut)[0].size_px) <= 8
