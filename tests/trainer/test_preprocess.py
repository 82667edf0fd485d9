"""Photo sets: every rejected photo says why; a set with too few usable photos is refused."""

from dataclasses import replace

import numpy as np
import pytest
from PIL import Image, ImageFilter
from skimage import data
from trainer_photos import MIN_FACE_PX, astronaut, other_person, variants

from services.trainer import preprocess
from shared import faces, identity
from shared.trigger_word import make_trigger_word


def build(images, blur=40.0, min_photos=5, stored=None):
    return preprocess.build_training_set(
        images,
        class_word="woman",
        size=64,
        min_face_px=MIN_FACE_PX,
        blur_min_variance=blur,
        min_photos=min_photos,
        trigger_word="zuvek",
        stored=stored,
    )


def test_bad_photos_get_reasons_and_good_ones_are_aligned(photos):
    two = Image.new("RGB", (1024, 512))
    two.paste(astronaut(), (0, 0))
    two.paste(astronaut(), (512, 0))
    bad = [
        Image.fromarray(data.chelsea()),
        two,
        astronaut().resize((256, 256)),
        astronaut().filter(ImageFilter.GaussianBlur(2)),
    ]
    result = build(photos[:5] + bad)
    codes = [v.reason_code for v in result.verdicts]
    assert codes == [None] * 5 + ["no_face", "multiple_faces", "face_too_small", "too_blurry"]
    assert all(v.reason for v in result.verdicts[5:])
    assert len(result.crops) == 5 and result.embeddings.shape == (5, 128)
    assert result.caption == "a photo of zuvek woman"
    crop = result.crops[0]
    assert crop.size == (64, 64)
    # Aligned: the face sits in the middle of the crop, eyes level.
    big = preprocess.align_face(photos[0], faces.detect_faces(photos[0])[0], 512)
    face = faces.detect_faces(big)[0]
    (x0, _, x1, _), pts = face.box, face.landmarks
    assert abs((x0 + x1) / 2 - 256) < 40 and 0.25 < face.size_px / 512 < 0.6
    eye_a, eye_b = (pts[0][1] + pts[1][1]) / 2, (pts[2][1] + pts[3][1]) / 2
    assert abs(eye_a - eye_b) < 6


def test_mixed_identities_are_rejected(photos):
    # The LFW face is a real different person, but 25 px upscaled: blurry, so the blur check is
    # switched off to reach the identity check.
    result = build(photos[:5] + [other_person()], blur=0.0)
    stranger = result.verdicts[-1]
    assert stranger.reason_code == "identity_mismatch"
    assert stranger.identity_distance > identity.SAME_PERSON_DISTANCE
    assert "other photos" in stranger.reason
    assert all(v.accepted and v.identity_distance < 0.3 for v in result.verdicts[:5])


def test_too_few_photos_says_how_many_more():
    with pytest.raises(preprocess.TooFewPhotos) as e:
        build(variants(3) + [Image.fromarray(data.chelsea())])
    assert e.value.code == "too_few_photos"
    assert str(e.value) == "Only 3 photos have a clear face of you; upload 2 more (at least 5 are needed)."
    assert [v.reason_code for v in e.value.verdicts] == [None, None, None, "no_face"]


def test_trigger_words_are_stable_rare_and_distinct():
    a, b = make_trigger_word("likeness-1"), make_trigger_word("likeness-2")
    assert a == make_trigger_word("likeness-1") and a != b
    assert len(a) == 5 and a.isalpha()


def stored_checks(images) -> list[preprocess.StoredCheck]:
    """Each photo's check as the photos worker stores it (the row's JSON face, float32 embedding)."""
    out = []
    for image in images:
        check = faces.check_photo(image, min_face_px=MIN_FACE_PX, blur_min_variance=40.0, embed=True)
        assert check.accepted and check.face is not None and check.embedding is not None
        out.append(preprocess.StoredCheck(faces.Face.from_json(check.face.to_json()), check.embedding))
    return out


def test_stored_checks_are_used_instead_of_detecting_the_faces_again(photos, monkeypatch):
    """The photos worker already found each face and its embedding: the trainer aligns with what it
    stored (no second detection), and gets the crops and embeddings a new detection gives."""
    stored = stored_checks(photos[:5])
    fresh = build(photos[:5])

    def no_detection(*args, **kwargs):
        raise AssertionError("a stored check was not used")

    monkeypatch.setattr(preprocess.faces, "check_photo", no_detection)
    reused = build(photos[:5], stored=stored)
    assert np.array_equal(reused.embeddings, fresh.embeddings)
    assert [v.to_json() for v in reused.verdicts] == [v.to_json() for v in fresh.verdicts]
    for a, b in zip(reused.crops, fresh.crops, strict=True):  # landmarks stored to 0.01 px
        assert np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).mean() < 1.0


def test_a_stored_check_that_fails_today_s_thresholds_is_checked_again(photos, monkeypatch):
    """A setting may have changed since the upload (or the row is odd): such a photo is checked as
    if nothing were stored, and gets the reason a person can act on."""
    blurred = astronaut().filter(ImageFilter.GaussianBlur(2))
    good = stored_checks(photos[:5])
    odd = replace(good[0].face, box=(0, 0, 10_000, 10_000))  # a box outside this photo
    soft = faces.check_photo(blurred, min_face_px=MIN_FACE_PX, blur_min_variance=0.0, embed=True)
    stored = [
        *good[:4],
        preprocess.StoredCheck(odd, good[0].embedding),
        preprocess.StoredCheck(soft.face, soft.embedding),  # accepted with a lower blur limit
    ]
    checked = []
    real = preprocess.faces.check_photo
    monkeypatch.setattr(
        preprocess.faces, "check_photo", lambda image, **kw: checked.append(image) or real(image, **kw)
    )
    result = build([*photos[:4], photos[0], blurred], stored=stored)
    assert checked == [photos[0], blurred]
    assert [v.reason_code for v in result.verdicts] == [None] * 5 + ["too_blurry"]
    with pytest.raises(ValueError, match="5 stored checks for 6 photos"):
        build([*photos[:5], blurred], stored=stored[:5])
