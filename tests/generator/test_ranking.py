"""Portraits are ranked by likeness: real face photos with distinct identity scores go through
the pipeline's last stage (a seam in place of the tiny models' faceless upscale), and the gallery
lists a job's portraits best score first."""

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageFilter

from services.generator.likeness import Likeness
from shared.faces import detect_faces, face_embedding
from shared.styles import get_style
from tests.generator.test_pipeline import _pipeline

pytestmark = pytest.mark.filterwarnings("error:invalid value encountered:RuntimeWarning")


def _photos() -> dict[str, Image.Image]:
    """The reference photo, three edits of it farther and farther from it, and a cat (no face)."""
    from skimage import data

    face = Image.fromarray(data.astronaut())
    return {
        "blurred": face.filter(ImageFilter.GaussianBlur(2)),  # distance ~0.38
        "cat": Image.fromarray(data.chelsea()),
        "same": face,  # distance 0
        "mirrored": face.transpose(Image.Transpose.FLIP_LEFT_RIGHT),  # ~0.19
        "darker": ImageEnhance.Brightness(face).enhance(0.5),  # ~0.14
    }


class FinalPhotos:
    """Stands in for the upscale stage: returns the given photos, one per seed."""

    def __init__(self, photos: list[Image.Image]):
        self.photos = photos

    def __call__(self, images, embeds, params, seeds):  # noqa: ANN001
        assert len(images) == len(self.photos) == len(seeds)
        return list(self.photos)


def test_results_come_best_likeness_first(tiny):
    photos = _photos()
    reference = face_embedding(photos["same"], detect_faces(photos["same"])[0])[None, :]
    pipeline = _pipeline(tiny)
    pipeline.upscale = FinalPhotos(list(photos.values()))
    likeness = Likeness(None, class_word="woman", reference_embeddings=reference)

    results = pipeline(likeness, get_style("studio-business"), seed=100, count=len(photos))

    by_seed = dict(zip(range(100, 100 + len(photos)), photos, strict=True))
    assert [by_seed[r.seed] for r in results] == ["same", "darker", "mirrored", "blurred", "cat"]
    scores = [r.identity_score for r in results]
    assert scores[0] == pytest.approx(1.0)
    assert scores[:4] == sorted(set(scores[:4]), reverse=True)  # distinct, best first
    assert [r.face_found for r in results] == [True] * 4 + [False]
    assert scores[4] is None and results[4].meta["identity_score"] is None
    assert np.isclose(results[1].meta["identity_score"], scores[1])
