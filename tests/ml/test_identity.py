"""shared.identity: whose photos these are, from real dlib embeddings of two real people (skimage's
astronaut and matplotlib's Grace Hopper)."""

import numpy as np
import pytest

from shared import faces
from shared.identity import MIN_CORE, SAME_PERSON_DISTANCE, check_identity
from tests.pictures import astronaut_variants, grace_hopper_variants


def embed(images) -> np.ndarray:
    out = []
    for image in images:
        check = faces.check_photo(image, min_face_px=128, blur_min_variance=40.0, embed=True)
        assert check.accepted, check.reason
        out.append(check.embedding)
    return np.stack(out)


@pytest.fixture(scope="module")
def her() -> np.ndarray:
    return embed(astronaut_variants(7))


@pytest.fixture(scope="module")
def other() -> np.ndarray:
    return embed(grace_hopper_variants(3))


def test_strangers_in_the_set_are_called_out_wherever_they_are(her, other):
    # 7 of one person and 3 of another, in any order: the 3 are someone else.
    order = [0, 7, 1, 2, 8, 3, 4, 5, 9, 6]
    result = check_identity(np.concatenate([her, other])[order])
    assert result.decided and result.core_size == 7
    assert [int(i) for i in np.nonzero(result.others)[0]] == [1, 4, 8]
    assert result.distances[result.others].min() > SAME_PERSON_DISTANCE
    assert result.distances[~result.others].max() < 0.3  # the same person: far inside the threshold


def test_no_verdict_without_a_majority(her, other):
    assert not check_identity(her[:1]).decided  # one photo: nothing to compare
    tie = check_identity(np.concatenate([her[:2], other[:2]]))  # 2 and 2: who is the user?
    assert not tie.decided and not tie.others.any()
    assert check_identity(np.concatenate([her[:3], other[:2]])).others.tolist() == [False] * 3 + [True] * 2
    assert MIN_CORE == 2


def test_one_person_only_is_never_called_out(her):
    result = check_identity(her)
    assert result.decided and not result.others.any()


def test_the_shape_is_checked():
    with pytest.raises(ValueError, match=r"\(n, 128\)"):
        check_identity(np.zeros((3, 64)))
