"""Train a likeness from photos: preprocess -> LoRA training -> checkpoint selection -> export.

`train_likeness` needs no service (the `train_likeness` job handler and `studio train` call it).
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import typer
from celery.exceptions import SoftTimeLimitExceeded
from PIL import Image

from services.trainer import export, lora, preprocess, selection
from shared.config import get_settings
from shared.contracts.likeness_files import EMBEDDINGS_FILE
from shared.i18n import Sentence
from shared.images import ImageRejected, clean_upload, open_upright
from shared.ml import loading, registry
from shared.ml.compile_cache import use_compile_cache
from shared.trigger_word import make_trigger_word

log = logging.getLogger(__name__)
StageFn = Callable[[float, str], None]  # fraction 0..1, stage label (JobContext.progress)

# checkpoint choice renders at selection.VALIDATION_SAMPLER (was 25 steps of the base's PNDM)
VALIDATION_STEPS = {"tiny": 4, "sd15": 15}
# Fractions of the whole job each stage ends at (training dominates).
PREPROCESSED, TRAINED, SELECTED = 0.05, 0.85, 0.97


@dataclass
class LikenessResult:
    trigger_word: str
    class_word: str
    caption: str
    preset: str
    base_model: str
    lora: export.ExportedLora
    embeddings_path: Path  # (n, 128) float32 face embeddings of the accepted photos (.npy)
    steps: int
    best_step: int
    scores: list[dict]
    selection_note: str
    verdicts: list[preprocess.PhotoVerdict]
    losses: list[float]
    resumed_from: int | None
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def photos_used(self) -> int:
        """The photos the LoRA was really trained on (accepted by preprocessing)."""
        return sum(v.accepted for v in self.verdicts)

    def to_json(self) -> dict:
        return {
            "trigger_word": self.trigger_word,
            "class_word": self.class_word,
            "caption": self.caption,
            "preset": self.preset,
            "base_model": self.base_model,
            "lora_diffusers": str(self.lora.diffusers_path),
            "lora_kohya": str(self.lora.kohya_path),
            "steps": self.steps,
            "best_step": self.best_step,
            "scores": self.scores,
            "selection_note": self.selection_note,
            "photos": [v.to_json() for v in self.verdicts],
            "photos_used": self.photos_used,
            "final_loss": self.losses[-1] if self.losses else None,
            "resumed_from": self.resumed_from,
            "seconds": {k: round(v, 2) for k, v in self.seconds.items()},
        }


def load_training_pipeline(preset: str, device: str):
    """A private copy of the base pipeline (training attaches adapters and changes grad flags)."""
    return loading.load_pipeline(preset, device, dtype=lora.train_dtype(device))


# Set when this process's compiled warm-up failed (a compiler or driver problem): it trains eagerly
# rather than failing every job the same way.
_compile_failed = False


def training_config(preset: str, device: str) -> lora.TrainConfig:
    """The preset's TrainConfig with the TRAIN_COMPILE setting applied ("auto": on for CUDA),
    unless compiling failed in this process. A compiled step's kernels go to the compile cache
    (COMPILE_CACHE_DIR), set up here because inductor must know the folder before its first compile."""
    global _compile_failed
    mode = get_settings().train_compile
    compile_step = mode == "on" or (mode == "auto" and device.startswith("cuda"))
    compile_step = compile_step and not _compile_failed
    if compile_step:
        try:
            use_compile_cache(get_settings().compile_cache_folder, device)
        except OSError:  # the cache volume is full, read-only or missing: train, eagerly
            _compile_failed, compile_step = True, False
            log.exception("the compile cache folder is not usable: this worker trains with eager steps")
    return lora.config_for(preset, compile=compile_step)


def warm_training_pipeline(preset: str, device: str):
    """A worker's training pipeline (loaded here; the worker keeps it, services/trainer/tasks.py),
    with the compiled step built (or loaded from the compile
    cache) when TRAIN_COMPILE is on; later compiles run eagerly instead (`eager_on_recompile`),
    never a minute-long compile inside a job. If the compiled warm-up raises, the error is logged
    and this process trains with eager steps."""
    global _compile_failed
    pipe = load_training_pipeline(preset, device)  # once per process: shared.warm.Resident holds it
    config = training_config(preset, device)
    if config.compile:
        try:
            seconds = lora.warm_up(pipe, config)
        except SoftTimeLimitExceeded:  # a job waiting for this warm-up ran out of time: not a compile error
            raise
        except Exception:
            _compile_failed = True
            log.exception("compiling the training step failed: this worker trains with eager steps")
            return pipe
        log.info("compiled the training step in %.1f s (or loaded it from the compile cache)", seconds)
        import torch

        torch.compiler.set_stance("eager_on_recompile")
    return pipe


def train_likeness(
    images: list[Image.Image],
    *,
    class_word: str,
    preset: str | None = None,
    out_dir: Path,
    progress: StageFn | None = None,
    checkpoints: lora.CheckpointStore | None = None,
    seed: int = 0,
    trigger_word: str | None = None,
    device: str | None = None,
    config: lora.TrainConfig | None = None,
    min_face_px: int | None = None,
    blur_min_variance: float | None = None,
    min_photos: int | None = None,
    pipe=None,
    stored: list[preprocess.StoredCheck | None] | None = None,
) -> LikenessResult:
    """Raises preprocess.TooFewPhotos (with per-photo reasons) when fewer than `min_photos`
    (default: the MIN_TRAINING_PHOTOS setting, the one minimum the gateway and the page use too)
    photos are usable.

    `pipe`: a training pipeline of `preset` on `device` to reuse (a worker's resident one); it is
    handed back without adapters, as it came. None loads a private one.
    `stored`: per image, the photos worker's stored face check or None (see
    `preprocess.build_training_set`)."""
    settings = get_settings()
    preset = loading.current_preset(preset)
    device = loading.resolve_device(device)
    config = config or training_config(preset, device)
    report = progress or (lambda fraction, stage: None)
    seconds: dict[str, float] = {}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    began = time.monotonic()
    report(0.0, "preprocessing")
    trigger = trigger_word or make_trigger_word(f"{out_dir.resolve()}:{seed}")
    data = preprocess.build_training_set(
        images,
        class_word=class_word,
        size=config.resolution,
        min_face_px=min_face_px if min_face_px is not None else settings.face_min_px,
        blur_min_variance=(
            blur_min_variance if blur_min_variance is not None else settings.blur_min_variance
        ),
        min_photos=min_photos if min_photos is not None else settings.min_training_photos,
        trigger_word=trigger,
        stored=stored,
    )
    seconds["preprocess"] = time.monotonic() - began

    began = time.monotonic()
    if pipe is None:
        pipe = load_training_pipeline(preset, device)
    seconds["load"] = time.monotonic() - began

    def on_step(step: int, total: int, loss: float, eta: float) -> None:
        fraction = PREPROCESSED + (TRAINED - PREPROCESSED) * step / total
        report(fraction, f"training step {step}/{total}, about {lora.eta_text(eta)} left")

    try:  # a resident pipeline goes back to the worker without this job's adapters
        began = time.monotonic()
        trained = lora.train_lora(
            pipe, data.crops, data.caption, config, seed=seed, progress=on_step, checkpoints=checkpoints
        )
        seconds["train"] = time.monotonic() - began

        began = time.monotonic()
        report(TRAINED, "choosing the best checkpoint")
        chosen, state = selection.select_checkpoint(
            pipe,
            trained.snapshots,
            data.embeddings,
            f"a portrait photo of {trigger} {class_word}",
            size=config.resolution,
            steps=VALIDATION_STEPS[preset],
            seconds=seconds,  # + select_render, select_faces
        )
        seconds["select"] = time.monotonic() - began

        report(SELECTED, "saving")
        base_model = loading.base_model_id(preset)
        base_sha = None if preset == "tiny" else registry.weights_sha256(base_model)
        scores = chosen.table()
        name = f"likeness-{trigger}"  # the file stem: A1111's `<lora:likeness-<trigger>:1>`
        metadata = export.lora_metadata(
            base_model=base_model,
            base_model_sha256=base_sha,
            rank=config.rank,
            alpha=config.alpha,
            steps=chosen.best_step,
            trigger_word=trigger,
            class_word=class_word,
            scores=scores,
            best_step=chosen.best_step,
            output_name=name,
            sd_model_name=_checkpoint_file_name(base_model),
            resolution=config.resolution,
            num_train_images=len(data.crops),
        )
        exported = export.export_lora(state, out_dir, name=name, metadata=metadata, alpha=config.alpha)
        # The identity references of the accepted photos, kept with the likeness: the generator
        # scores portraits against them without downloading and re-embedding the photos.
        embeddings_path = out_dir / EMBEDDINGS_FILE
        np.save(embeddings_path, np.asarray(data.embeddings, np.float32).reshape(-1, 128))
        report(1.0, "done")
        return LikenessResult(
            trigger_word=trigger,
            class_word=class_word,
            caption=data.caption,
            preset=preset,
            base_model=base_model,
            lora=exported,
            embeddings_path=embeddings_path,
            steps=trained.steps,
            best_step=chosen.best_step,
            scores=scores,
            selection_note=chosen.note,
            verdicts=data.verdicts,
            losses=trained.losses,
            resumed_from=trained.resumed_from,
            seconds=seconds,
        )
    finally:
        lora.remove_lora(pipe)


PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif"}


def load_photos(folder: Path, skipped: Callable[[str], None] = lambda reason: None) -> list[Image.Image]:
    """The photos in `folder` (by name), decoded with the upload's defensive decoder
    (shared.images.clean_upload: format sniffing, the byte and megapixel limits, bomb guard) as
    8-bit RGB; HEIC/HEIF (iPhone) photos too. A file it refuses, or one whose name is not a
    photo's (other than hidden files such as .DS_Store), is left out and its sentence passed to
    `skipped`."""
    settings = get_settings()
    images = []
    for path in sorted(p for p in Path(folder).iterdir() if p.is_file() and not p.name.startswith(".")):
        if path.suffix.lower() not in PHOTO_SUFFIXES:
            skipped(f"{Sentence('upload.not_image', {'name': path.name}).render().rstrip('.')}; skipped.")
            continue
        try:
            clean = clean_upload(
                path.read_bytes(),
                filename=path.name,
                max_bytes=settings.upload_max_bytes,
                max_pixels=settings.upload_max_pixels,
            )
        except ImageRejected as exc:
            skipped(f"{exc.message.rstrip('.')}; skipped.")
            continue
        images.append(open_upright(io.BytesIO(clean.data)))
    return images


def train_cmd(
    photos: Path = typer.Option(..., exists=True, file_okay=False, help="folder of photos"),
    out: Path = typer.Option(..., help="output folder (LoRA files, checkpoints)"),
    class_word: str = typer.Option("person", help="woman, man or person"),
    preset: str = typer.Option(None, help="tiny or sd15 (default: MODEL_PRESET)"),
    seed: int = typer.Option(0),
) -> None:
    """Train a likeness LoRA from a folder of photos, without any service."""
    images = load_photos(photos, skipped=lambda reason: typer.echo(reason, err=True))
    store = lora.LocalCheckpointStore(out / "checkpoints")
    last = [-1.0]

    def show(fraction: float, stage: str) -> None:
        if fraction - last[0] >= 0.05 or fraction in (0.0, 1.0):
            last[0] = fraction
            typer.echo(f"{fraction:5.0%}  {stage}", err=True)

    try:
        result = train_likeness(
            images,
            class_word=class_word,
            preset=preset,
            out_dir=out,
            progress=show,
            checkpoints=store,
            seed=seed,
        )
    except preprocess.TooFewPhotos as e:
        for v in e.verdicts:
            if not v.accepted:
                typer.echo(f"photo {v.index + 1}: {v.reason}", err=True)
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from e
    typer.echo(json.dumps(result.to_json(), indent=2))


def _checkpoint_file_name(base_model: str) -> str:
    """The base model's checkpoint file name (sd-scripts' `ss_sd_model_name`), else its id."""
    try:
        spec = registry.get_spec(base_model)
    except registry.ModelError:
        return base_model
    return Path(spec.files[0].path).name if spec.layout == "file" and spec.files else base_model
