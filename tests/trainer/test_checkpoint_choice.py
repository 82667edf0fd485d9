"""Checkpoint selection's real branch: renders that have faces, with distinct identity scores.

Tiny random models draw no face, so the renders are fed through a seam: `iter_snapshot_renders` yields
real photos (skimage's astronaut and edits of it), one list per checkpoint in order. The scoring rule
(dlib embeddings, median reference, best mean similarity) runs unchanged."""

import threading
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageFilter
from skimage import data

from services.trainer import selection
from shared.faces import detect_faces, face_embedding


def test_the_checkpoint_whose_renders_look_most_like_the_person_is_kept(monkeypatch):
    face = Image.fromarray(data.astronaut())
    reference = face_embedding(face, detect_faces(face, upsample=False)[0])
    renders = {  # step -> its validation renders, farther from the person as the edits grow
        100: [face.filter(ImageFilter.GaussianBlur(2))] * 2,
        200: [face, ImageEnhance.Brightness(face).enhance(0.5)],
        300: [face.transpose(Image.Transpose.FLIP_LEFT_RIGHT)] * 2,
    }
    monkeypatch.setattr(
        selection, "iter_snapshot_renders", lambda pipe, snaps, prompt, **kw: iter(renders.values())
    )
    snapshots = [(step, {"marker": torch.tensor([step])}) for step in renders]  # no LoRA keys
    pipe = SimpleNamespace(unet=None, text_encoder=None)

    chosen, state = selection.select_checkpoint(
        pipe, snapshots, np.stack([reference, reference]), "photo of zuvek woman", size=64, steps=2
    )

    assert chosen.best_step == 200 and state is snapshots[1][1]
    scores = {s.step: s.score for s in chosen.scores}
    assert scores[200] > scores[300] > scores[100]  # distinct, and the order of likeness
    assert scores[200] == pytest.approx(1 - 0.138 / 2, abs=0.02)  # one exact face, one darker
    assert all(s.faces_found == s.renders == 2 and s.note is None for s in chosen.scores)
    assert chosen.note == f"kept step 200: best identity score {scores[200]:.3f}"


def test_each_snapshot_is_face_checked_while_the_next_one_renders(monkeypatch):
    """The CPU face check of snapshot k runs beside the GPU render of snapshot k+1, not after all
    renders: the seam, asked for snapshot k+1, waits until snapshot k's detection has begun."""
    face = Image.fromarray(data.astronaut())
    reference = face_embedding(face, detect_faces(face, upsample=False)[0])
    detection_began = threading.Event()
    real_detect = selection.faces.detect_faces

    def detect(image, **kwargs):
        detection_began.set()
        return real_detect(image, **kwargs)

    overlapped = []

    def renders(pipe, snaps, prompt, **kw):
        for k in range(len(snaps)):
            if k:  # drawing snapshot k: snapshot k-1 (one render) should be under its face check
                overlapped.append(detection_began.wait(timeout=5))
                detection_began.clear()
            yield [face]

    monkeypatch.setattr(selection.faces, "detect_faces", detect)
    monkeypatch.setattr(selection, "iter_snapshot_renders", renders)
    snapshots = [(step, {"marker": torch.tensor([step])}) for step in (100, 200, 300)]
    seconds: dict[str, float] = {}

    chosen, _ = selection.select_checkpoint(
        SimpleNamespace(unet=None, text_encoder=None), snapshots, reference[None], "a photo",
        size=64, steps=2, seconds=seconds,
    )  # fmt: skip

    assert overlapped == [True, True]
    assert [s.faces_found for s in chosen.scores] == [1, 1, 1]
    assert set(seconds) == {"select_render", "select_faces"}


def test_validation_renders_are_face_checked_without_upsampling(monkeypatch):
    """A render's face fills it; upsampling a 512 px render for HOG tripled the check's time."""
    face = Image.fromarray(data.astronaut())
    calls = []
    real_detect = selection.faces.detect_faces

    def detect(image, **kwargs):
        calls.append(kwargs)
        return real_detect(image, **kwargs)

    monkeypatch.setattr(selection.faces, "detect_faces", detect)
    reference = face_embedding(face, detect_faces(face, upsample=False)[0])

    score, found = selection.identity_score([face], reference)

    assert calls == [{"upsample": False}] and found == 1 and score == pytest.approx(1.0, abs=1e-6)
