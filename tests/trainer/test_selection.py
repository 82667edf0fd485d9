"""Checkpoint selection scores renders with real faces (skimage's astronaut) and a cat (no face)."""

from services.trainer.selection import NO_FACE_SIMILARITY, identity_score
from shared import faces
from tests.pictures import astronaut, astronaut_variants, cat
from tests.trainer.trainer_snapshots import random_snapshots


def test_a_render_without_a_face_counts_as_the_worst_score() -> None:
    person = astronaut()
    reference = faces.face_embedding(person, faces.detect_faces(person)[0])
    # One checkpoint draws the face in 1 of 3 renders, and that one perfectly (similarity 1) ...
    one_of_three, found_a = identity_score([person, cat(), cat()], reference)
    # ... another draws it in all 3, each a little off (flipped, rotated, darker).
    three_of_three, found_b = identity_score(astronaut_variants(4)[1:], reference)
    assert (found_a, found_b) == (1, 3)
    assert one_of_three == (1.0 + 2 * NO_FACE_SIMILARITY) / 3
    assert three_of_three > one_of_three  # the old mean over found faces only said 1.0 > ~0.8
    assert 0.0 <= three_of_three <= 1.0


def test_no_face_anywhere_has_no_score() -> None:
    person = astronaut()
    reference = faces.face_embedding(person, faces.detect_faces(person)[0])
    assert identity_score([cat(), cat()], reference) == (None, 0)


def test_validation_renders_in_one_batch_equal_one_call_per_seed() -> None:
    """The batched validation call (one generator per seed) renders what one call per seed did."""
    import numpy as np
    import torch

    from services.trainer import train
    from services.trainer.selection import render_validation, validation_sampler

    pipe = train.load_training_pipeline("tiny", "cpu")
    own = pipe.scheduler
    seeds = (11, 22, 33)
    batched = render_validation(pipe, "a portrait photo", size=64, steps=3, seeds=seeds)
    assert pipe.scheduler is own  # training reads the pipe's own scheduler's config
    one_by_one = []
    for seed in seeds:
        with validation_sampler(pipe):
            assert type(pipe.scheduler).__name__ == "DPMSolverMultistepScheduler"
            assert pipe.scheduler.config.use_karras_sigmas
            one_by_one += pipe("a portrait photo", height=64, width=64, num_inference_steps=3,
                               generator=torch.Generator().manual_seed(seed)).images  # fmt: skip
    assert len(batched) == len(seeds)
    for a, b in zip(batched, one_by_one, strict=True):
        assert np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max() <= 2  # 8-bit rounding
    # Different seeds, different images: the generators are not shared.
    assert not np.array_equal(np.asarray(batched[0]), np.asarray(batched[1]))


def test_all_snapshots_in_one_batch_equal_one_call_per_snapshot() -> None:
    """render_snapshots (every snapshot's seeds in one call, a peft adapter per snapshot) renders
    what loading each snapshot and rendering it alone did; the pipe keeps only its own adapter."""
    import numpy as np

    from services.trainer import lora, train
    from services.trainer.selection import render_snapshots, render_validation

    pipe = train.load_training_pipeline("tiny", "cpu")
    lora.add_lora(pipe, lora.PRESETS["tiny"], seed=0)
    snapshots = random_snapshots(pipe)
    seeds = (11, 22)
    one_by_one = []
    for _, state in snapshots:
        lora.load_lora_state(pipe, state)
        one_by_one.append(render_validation(pipe, "a portrait photo", size=64, steps=3, seeds=seeds))
    batched = render_snapshots(
        pipe, snapshots, "a portrait photo", size=64, steps=3, seeds=seeds, batched=True
    )
    assert [len(r) for r in batched] == [2, 2, 2]
    for mine, theirs in zip(batched, one_by_one, strict=True):
        for a, b in zip(mine, theirs, strict=True):
            assert np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max() <= 2  # 8-bit rounding
    assert not np.array_equal(np.asarray(batched[0][0]), np.asarray(batched[1][0]))  # own weights
    assert list(pipe.unet.peft_config) == [lora.ADAPTER]
