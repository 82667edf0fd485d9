"""Pick the checkpoint whose renders look most like the person.

Each checkpoint renders a few validation portraits with fixed seeds; each render is scored by the
face-embedding distance to the user's photos (shared.faces). A render without a face counts as
the worst score (0), so a checkpoint that draws the face in 1 of 3 renders cannot beat one that
draws it in all 3. A checkpoint with no face in any render has no score; when no checkpoint has
one (random demo models), the last one is kept and the note says so.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from services.trainer.lora import ADAPTER, load_lora_state
from shared import faces
from shared.ml.cuda_graphs import graphed_unet
from shared.ml.samplers import make_scheduler

VALIDATION_SEEDS = (11, 22, 33)
# The renders are only scored, never shown: DPM++ 2M Karras draws a clear face in about 15 steps
# (A1111's usual fast sampler), where the base's own scheduler (PNDM for SD-1.5) took 25.
VALIDATION_SAMPLER = "DPM++ 2M Karras"


@contextlib.contextmanager
def validation_sampler(pipe):
    """Inside, `pipe.scheduler` is a fresh VALIDATION_SAMPLER scheduler of the pipe's scheduler
    config; after, the pipe's own scheduler again (training reads its config)."""
    own = pipe.scheduler
    pipe.scheduler = make_scheduler(VALIDATION_SAMPLER, own.config)
    try:
        yield pipe
    finally:
        pipe.scheduler = own


@dataclass(frozen=True)
class CheckpointScore:
    step: int
    score: float | None  # mean identity similarity over all renders (no face: 0); None: no face at all
    faces_found: int
    renders: int
    note: str | None = None

    def to_json(self) -> dict:
        return {
            "step": self.step,
            "score": None if self.score is None else round(self.score, 4),
            "faces_found": self.faces_found,
            "renders": self.renders,
            "note": self.note,
        }


@dataclass(frozen=True)
class Selection:
    best_step: int
    scores: list[CheckpointScore]
    note: str

    def table(self) -> list[dict]:
        return [s.to_json() for s in self.scores]


NO_FACE_SIMILARITY = 0.0  # the worst score: a render without a face


def identity_score(images, reference: np.ndarray) -> tuple[float | None, int]:
    """(mean similarity over every image, number of images with a face), or (None, 0) when no
    image has a face. Similarity is 1 - the dlib distance to `reference`, clipped to [0, 1]
    (distance >= 1 is a stranger however far); an image without a face scores NO_FACE_SIMILARITY.

    Detection does not upsample: a validation render is a portrait whose face spans far more than
    dlib's 80 px window, and upsampling a 512 px render tripled the check's HOG time (0.11 vs
    0.03 s on the 2-core CPU); a render whose face is that small is no likeness to pick anyway."""
    similarities, found = [], 0
    for image in images:
        detected = faces.detect_faces(image, upsample=False)
        if detected:
            emb = faces.face_embedding(image, detected[0])
            similarities.append(float(np.clip(1.0 - faces.face_distance(emb, reference), 0.0, 1.0)))
            found += 1
        else:
            similarities.append(NO_FACE_SIMILARITY)
    return (float(np.mean(similarities)) if found else None), found


@torch.no_grad()
def render_validation(pipe, prompt: str, *, size: int, steps: int, seeds=VALIDATION_SEEDS):
    """One `size` x `size` PIL render per seed, all in one batched pipeline call.

    Each image draws its initial latents from its own `torch.Generator` seeded with its seed
    (diffusers' `randn_tensor` with a list of generators), so image i equals what a batch-1 call
    with seed i renders, up to floating-point reduction order; one batch of len(seeds) costs
    about what one image does on a big GPU, where a batch-1 SD-1.5 step is launch-bound. Sampler:
    VALIDATION_SAMPLER."""
    with validation_sampler(pipe):
        return pipe(
            prompt,
            height=size,
            width=size,
            num_inference_steps=steps,
            num_images_per_prompt=len(seeds),
            generator=[torch.Generator().manual_seed(seed) for seed in seeds],
        ).images


MAX_BATCH_IMAGES = 24  # images per batched validation call (x2 rows for CFG)


def render_snapshots(pipe, snapshots, prompt: str, **kwargs) -> list[list]:
    """Every snapshot's validation renders as one list of PIL images per snapshot, in order
    (`iter_snapshot_renders`, gathered; same arguments)."""
    return list(iter_snapshot_renders(pipe, snapshots, prompt, **kwargs))


@torch.no_grad()
def iter_snapshot_renders(
    pipe,
    snapshots: list[tuple[int, dict[str, torch.Tensor]]],
    prompt: str,
    *,
    size: int,
    steps: int,
    seeds=VALIDATION_SEEDS,
    batched: bool = False,
    graphs: bool = True,
) -> Iterator[list]:
    """Every snapshot's validation renders, in as few pipeline calls as possible: each snapshot
    is loaded as a peft adapter of its own and each row of one batch runs through its own
    snapshot's adapter (peft's mixed-batch LoRA forward, `adapter_names`). Image j of snapshot k
    equals what `render_validation` renders with snapshot k loaded, up to floating-point
    reduction order. Snapshots with text-encoder weights (a prompt embedding per snapshot) are
    rendered one call each. `batched=False` (the default) renders one call per snapshot: on an
    H100 the mixed batch measured 6.09 s vs 5.07 s for 4 snapshots x 3 seeds at 512 px, 25 steps
    (peft gathers each adapter's rows in every LoRA layer; bench/results/train_h100_steady_selection.json).
    With `graphs` (and CUDA), the one-call-per-snapshot way replays the UNet from CUDA graphs
    (shared/ml/cuda_graphs.py): captured at the first step, then each snapshot's weights are
    loaded in place and seen by the same graphs; a batch-6 step at 512 px is launch-bound eager.
    Yields one list of PIL images per snapshot, in order, each as soon as it is drawn (one call
    per snapshot), so its face check can run while the next snapshot renders; the mixed batch
    yields them all after its last call."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    if not batched or any(k.startswith("text_encoder.") for _, state in snapshots for k in state):
        with graphed_unet(pipe.unet) if graphs else contextlib.nullcontext():
            for _, state in snapshots:
                load_lora_state(pipe, state)
                yield render_validation(pipe, prompt, size=size, steps=steps, seeds=seeds)
        return
    unet = pipe.unet
    names = [f"snapshot_{k}" for k in range(len(snapshots))]
    config = unet.peft_config[ADAPTER]
    rows: list[str] = []  # adapter of each image of the current call
    layers = [m for m in unet.modules() if isinstance(m, BaseTunerLayer)]

    def per_row(module, args, kwargs):
        batch = len(args[0])  # CFG doubles the rows: [unconditional images, conditional images]
        return args, {**kwargs, "adapter_names": [rows[i % len(rows)] for i in range(batch)]}

    hooks = []
    try:
        for name, (_, state) in zip(names, snapshots, strict=True):
            unet.add_adapter(config, adapter_name=name)
            for key, param in unet.named_parameters():
                if f".{name}." in key:
                    param.data = param.data.float()  # fp32 like the trained adapter
            load_lora_state(pipe, state, adapter_name=name)
        unet.set_adapter(ADAPTER)
        hooks = [m.register_forward_pre_hook(per_row, with_kwargs=True) for m in layers]
        jobs = [(k, seed) for k in range(len(snapshots)) for seed in seeds]
        images: list = []
        for start in range(0, len(jobs), MAX_BATCH_IMAGES):
            chunk = jobs[start : start + MAX_BATCH_IMAGES]
            rows[:] = [names[k] for k, _ in chunk]
            with validation_sampler(pipe):
                images += pipe(
                    prompt, height=size, width=size, num_inference_steps=steps,
                    num_images_per_prompt=len(chunk),
                    generator=[torch.Generator().manual_seed(seed) for _, seed in chunk],
                ).images  # fmt: skip
    finally:
        for hook in hooks:
            hook.remove()
        present = [n for n in names if n in unet.peft_config]
        if present:
            unet.delete_adapters(present)
        unet.set_adapter(ADAPTER)
    n = len(seeds)
    for k in range(len(snapshots)):
        yield images[k * n : (k + 1) * n]


def select_checkpoint(
    pipe,
    snapshots: list[tuple[int, dict[str, torch.Tensor]]],
    reference_embeddings: np.ndarray,
    prompt: str,
    *,
    size: int,
    steps: int,
    seeds=VALIDATION_SEEDS,
    seconds: dict[str, float] | None = None,
) -> tuple[Selection, dict[str, torch.Tensor]]:
    """Score every snapshot; return the selection and the chosen LoRA state (left loaded in pipe).

    Each snapshot's face check (dlib, CPU) runs on one worker thread while the GPU draws the next
    snapshot: dlib releases the GIL, and one thread keeps its calls one at a time (concurrent
    calls crash, see `faces.detect_faces`). `seconds`, if given, receives "select_render" (until
    the last render is drawn, face checks running beside) and "select_faces" (the face checks
    still left after it). Raises ValueError for no snapshots."""
    if not snapshots:
        raise ValueError("no checkpoints to select from")
    reference = np.median(reference_embeddings, axis=0)
    began = time.monotonic()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="identity-score") as checker:
        checks = [
            (len(renders), checker.submit(identity_score, renders, reference))
            for renders in iter_snapshot_renders(pipe, snapshots, prompt, size=size, steps=steps, seeds=seeds)
        ]
        rendered = time.monotonic()
        results = [(count, check.result()) for count, check in checks]
    scores = []
    for (step, _), (count, (score, found)) in zip(snapshots, results, strict=True):
        note = None if found else "no face in validation render"
        scores.append(CheckpointScore(step, score, found, count, note))
    if seconds is not None:
        seconds["select_render"] = rendered - began
        seconds["select_faces"] = time.monotonic() - rendered
    scored = [s for s in scores if s.score is not None]
    if scored:
        best = max(scored, key=lambda s: (s.score, s.step))
        note = f"kept step {best.step}: best identity score {best.score:.3f}"
    else:
        best = scores[-1]
        note = (
            f"no face in any validation render (demo models cannot draw faces); "
            f"kept the last checkpoint, step {best.step}"
        )
    state = dict(snapshots)[best.step]
    load_lora_state(pipe, state)
    return Selection(best.step, scores, note), state
