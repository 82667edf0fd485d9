"""The `train` queue (GPU): train a likeness LoRA from the photos the user had when they asked.

The handler only moves data: photos from S3 in, the library (services/trainer/train.py) trains,
the LoRA files go to S3 and the Likeness row says where. Checkpoints go to S3 as training runs, so
an attempt whose worker was killed resumes where the last one stopped.
"""

from __future__ import annotations

import io
import logging
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
from celery.signals import worker_process_init
from PIL import Image
from sqlalchemy import select

from services.trainer import train
from services.trainer.checkpoints import S3CheckpointStore
from services.trainer.preprocess import StoredCheck
from shared import pending_objects, storage
from shared.accounts import hold_account
from shared.config import get_settings
from shared.contracts import ErrorCode, LikenessTrained, SendEmail, TrainLikeness
from shared.contracts.likeness_files import DIFFUSERS_DIR, DIFFUSERS_FILE, LikenessFiles
from shared.db import session_scope
from shared.faces import Face
from shared.i18n import Sentence
from shared.images import open_upright
from shared.jobs import JobCanceled, JobContext, JobError, job_task
from shared.jobs.runner import public_error
from shared.ml import loading
from shared.models import Job, JobStatus, Likeness, LikenessStatus, Photo, PhotoStatus
from shared.trigger_word import make_trigger_word
from shared.warm import Resident

log = logging.getLogger(__name__)

DOWNLOADED = 0.02  # fraction of the job when the photos are in; the library reports from there


# One training pipeline per worker process, loaded (and its step compiled, with TRAIN_COMPILE)
# as soon as the pool process starts; /readyz answers 503 until then.
_resident = Resident(
    lambda: train.warm_training_pipeline(get_settings().model_preset, loading.resolve_device(None)), "trainer"
)
worker_process_init.connect(lambda **_: _resident.start_in_background(), weak=False)


@job_task(TrainLikeness)
def train_likeness_job(ctx: JobContext[TrainLikeness]) -> LikenessTrained:
    """Train the likeness LoRA of `ctx.input.likeness_id` and record its files on the row."""
    likeness_id = ctx.input.likeness_id
    class_word, chosen = _load_request(ctx, likeness_id)
    ctx.progress(0.0, "downloading photos")
    began = time.monotonic()
    images, stored = _download(chosen)
    downloaded = time.monotonic() - began
    missing = len(chosen) - len(images)
    store = S3CheckpointStore(ctx.owner, likeness_id)
    with tempfile.TemporaryDirectory(prefix="likeness-") as tmp:
        try:
            preset = get_settings().model_preset
            began = time.monotonic()
            pipe = _resident.get()
            loaded = time.monotonic() - began  # 0 once this worker holds the pipeline
            result = train.train_likeness(
                images,
                class_word=class_word,
                preset=preset,
                pipe=pipe,
                out_dir=Path(tmp),
                progress=lambda fraction, stage: ctx.progress(
                    DOWNLOADED + (1 - DOWNLOADED) * fraction, stage
                ),
                checkpoints=store,
                seed=_seed(likeness_id),
                trigger_word=make_trigger_word(str(likeness_id)),
                stored=stored,
            )
        except JobCanceled:
            if _canceled(ctx.job_id):  # by the user (or the likeness was deleted): nothing to resume
                _clear_checkpoints(store)
            raise  # else handed to another worker: it resumes from the checkpoints
        except Exception as e:
            error = _user_error(e, missing)
            if error is None:
                _fail_if_last_attempt(ctx, likeness_id, e)
                raise  # an outage or a bug: the runner retries it
            _mark_failed(likeness_id, error.code, error.message)
            raise error from e
        ctx.check_canceled()  # canceled (or the account erased) since the last step: upload nothing
        began = time.monotonic()
        found = _store_likeness(ctx.owner, likeness_id, result)
        uploaded = time.monotonic() - began
    if found is None:
        raise JobError.of(ErrorCode.likeness_deleted)
    if found == LikenessStatus.canceled:
        raise JobCanceled()
    _clear_checkpoints(store)
    ctx.follow_up(SendEmail.training_finished(ctx.job_id, likeness_id), user_id=ctx.user_id)
    return LikenessTrained(
        likeness_id=likeness_id,
        steps=result.steps,
        best_step=result.best_step,
        resumed_from_step=result.resumed_from,
        photos_used=result.photos_used,
        # Where the job's time went (s), for operators and benches (bench/gpu_e2e.py journey).
        seconds={
            k: round(v, 2)
            for k, v in {"download": downloaded, **result.seconds, "load": loaded, "upload": uploaded}.items()
        },
    )


def _clear_checkpoints(store: S3CheckpointStore) -> None:
    """Delete the training's checkpoints once the job's outcome is recorded, best effort: a failure
    here must not retry (and retrain) a finished job. What is left lies in the likeness's folder,
    deleted with the likeness or the account."""
    try:
        store.clear()
    except Exception:  # noqa: BLE001 - an S3 hiccup after the outcome is recorded
        log.warning("could not delete the training checkpoints; they go with the likeness", exc_info=True)


def _canceled(job_id: uuid.UUID) -> bool:
    with session_scope() as session:
        job = session.get(Job, job_id)
        return job is None or job.status == JobStatus.canceled


def _load_request(
    ctx: JobContext[TrainLikeness], likeness_id: uuid.UUID
) -> tuple[str, list[tuple[str, StoredCheck | None]]]:
    """The class word and, per photo chosen when training was requested, its object key and the
    photos worker's stored face check when it accepted the photo (else None)."""
    with session_scope() as session:
        likeness = session.get(Likeness, likeness_id)
        if likeness is None or likeness.user_id != ctx.user_id:
            raise JobError.of(ErrorCode.likeness_deleted)
        ids = [uuid.UUID(p) for p in likeness.photo_ids or []]
        photos = session.execute(
            select(Photo.id, Photo.object_key, Photo.status, Photo.face, Photo.embedding).where(
                Photo.id.in_(ids), Photo.user_id == ctx.user_id
            )
        ).all()
        order = {pid: i for i, pid in enumerate(ids)}
        chosen = [(row.object_key, _stored_check(row)) for row in sorted(photos, key=lambda r: order[r.id])]
        chosen += [("", None)] * (len(ids) - len(photos))  # deleted since: counted as missing below
        return likeness.class_word, chosen


def _stored_check(row) -> StoredCheck | None:
    """The photo row's accepted face check, or None (not accepted, or not readable: checked again)."""
    if row.status is not PhotoStatus.accepted or not row.face or not row.embedding:
        return None
    try:
        return StoredCheck(Face.from_json(row.face), np.asarray(row.embedding, dtype=np.float32))
    except (KeyError, TypeError, ValueError):
        return None


def _download(
    chosen: list[tuple[str, StoredCheck | None]],
) -> tuple[list[Image.Image], list[StoredCheck | None]]:
    """The photos still in storage, upright, each with its stored check (same order)."""
    images, stored = [], []
    for key, check in chosen:
        if not key:
            continue
        data = storage.get_bytes_or_none(key)
        if data is None:
            continue  # the photo was deleted (or expired) after training was requested
        images.append(open_upright(io.BytesIO(data)))
        stored.append(check)
    return images, stored


def _seed(likeness_id: uuid.UUID) -> int:
    """Fixed per likeness: a retried attempt draws the same noise as the one it resumes."""
    return likeness_id.int % 2**31


def _user_error(e: Exception, missing: int) -> JobError | None:
    """The trainer's own errors that carry a code (TooFewPhotos, ...) are about the photos: say so
    in their words and do not retry. Anything else is an outage or a bug."""
    code = getattr(e, "code", None)
    if not isinstance(code, str) or not type(e).__module__.startswith("services.trainer."):
        return None
    # Catalogue sentences (shared/i18n.py) where the error has one, so the page can show it in Korean.
    gone = [Sentence("job.photos_deleted", {"count": missing})] if missing else []
    sentence = getattr(e, "sentence", None)
    if isinstance(sentence, Sentence):
        return JobError(code, [*gone, sentence])
    return JobError(code, " ".join([*(s.render() for s in gone), str(e)]))


def _fail_if_last_attempt(ctx: JobContext[TrainLikeness], likeness_id: uuid.UUID, e: Exception) -> None:
    """The runner fails the job after its last attempt; the likeness must not stay 'training'."""
    if ctx.is_last_attempt:
        # the details stay in the log (shared.jobs.runner.public_error)
        _mark_failed(likeness_id, "internal_error", f"Training failed ({public_error(e)}).")


def _mark_failed(likeness_id: uuid.UUID, code: str, message: str) -> None:
    with session_scope() as session:
        likeness = session.get(Likeness, likeness_id)
        if likeness is not None and likeness.status == LikenessStatus.training:  # not one canceled
            likeness.status = LikenessStatus.failed
            likeness.meta = {**(likeness.meta or {}), "error_code": code, "error_message": message}


def _prefix(user_id: uuid.UUID, likeness_id: uuid.UUID) -> str:
    return storage.user_key(user_id, "likenesses", str(likeness_id)) + "/"


def _store_likeness(user_id: uuid.UUID, likeness_id: uuid.UUID, result: train.LikenessResult) -> str | None:
    """Upload the LoRA files and mark the likeness ready; returns the status the likeness had (None:
    deleted, or the account is being erased). A likeness gone or canceled meanwhile keeps nothing:
    its folder is deleted (checkpoints included), and what S3 fails to delete now stays announced
    for the sweep (shared/pending_objects.py). Raises storage and database errors (the runner
    retries): the files written so far stay announced."""
    files = _upload(user_id, likeness_id, result)
    found = _mark_ready(user_id, likeness_id, result, files)
    gone = found in (None, LikenessStatus.canceled)
    if gone and not pending_objects.delete_now([*_keys(files), _prefix(user_id, likeness_id) + "*"]):
        log.warning("S3 failed; the sweep deletes the files of likeness %s", likeness_id)
    return found


def _upload(user_id: uuid.UUID, likeness_id: uuid.UUID, result: train.LikenessResult) -> LikenessFiles:
    """Both formats under the likeness prefix (shared/contracts/likeness_files.py); returns their keys.

    Announced before the first write (shared/pending_objects.py) and settled by `_mark_ready`: files
    whose likeness or account is gone by then, or whose worker dies first, are deleted by the sweep."""
    prefix = _prefix(user_id, likeness_id)
    diffusers_dir = result.lora.diffusers_path
    writes = [
        (f"{prefix}{DIFFUSERS_DIR}/{path.relative_to(diffusers_dir).as_posix()}", path, _content_type(path))
        for path in sorted(p for p in diffusers_dir.rglob("*") if p.is_file())
    ]
    diffusers_files = [key for key, _, _ in writes]
    kohya = f"{prefix}{result.lora.kohya_path.name}"
    embeddings = f"{prefix}{result.embeddings_path.name}"
    writes += [
        (kohya, result.lora.kohya_path, _content_type(result.lora.kohya_path)),
        (embeddings, result.embeddings_path, "application/octet-stream"),
    ]
    pending_objects.announce([key for key, _, _ in writes])
    for key, path, content_type in writes:
        storage.put_bytes(key, path.read_bytes(), content_type)
    weights = next(k for k in diffusers_files if k.endswith(f"/{DIFFUSERS_FILE}"))
    return LikenessFiles(
        diffusers=weights, diffusers_files=diffusers_files, kohya=kohya, embeddings=embeddings
    )


def _keys(files: LikenessFiles) -> list[str]:
    """Every object key `_upload` wrote."""
    return [*files.diffusers_files, *(k for k in (files.kohya, files.embeddings) if k)]


def _content_type(path: Path) -> str:
    return "application/json" if path.suffix == ".json" else "application/octet-stream"


def _mark_ready(
    user_id: uuid.UUID, likeness_id: uuid.UUID, result: train.LikenessResult, files: LikenessFiles
) -> str | None:
    """Record the trained LoRA on the likeness and settle its files' announcement, under the account
    hold (shared/accounts.py); returns the status the likeness had (None: deleted, or the account is
    being erased). A likeness the user canceled meanwhile stays canceled. Settled only with "ready":
    otherwise the files stay announced, and the sweep deletes what the caller's clean-up could not."""
    config = result.lora.metadata
    with session_scope() as session:
        if not hold_account(session, user_id):  # the erasure may have listed the prefix already
            return None
        likeness = session.get(Likeness, likeness_id, with_for_update=True)
        if likeness is None or likeness.status == LikenessStatus.canceled:
            return None if likeness is None else likeness.status
        found = likeness.status
        likeness.status = LikenessStatus.ready
        likeness.base_model = result.base_model
        likeness.trigger_word = result.trigger_word
        likeness.object_prefix = _prefix(likeness.user_id, likeness_id)
        likeness.scores = {
            "best_step": result.best_step,
            "checkpoints": result.scores,
            "note": result.selection_note,
        }
        likeness.meta = {
            "preset": result.preset,
            "base_model": result.base_model,
            "base_model_sha256": config.get("studio_base_model_sha256") or None,
            "rank": int(config["ss_network_dim"]),
            "alpha": float(config["ss_network_alpha"]),
            "steps": result.steps,
            "best_step": result.best_step,
            "trigger_word": result.trigger_word,
            "caption": result.caption,
            "resumed_from_step": result.resumed_from,
            "final_loss": result.losses[-1] if result.losses else None,
            "photos": [v.to_json() for v in result.verdicts],
            "photos_used": result.photos_used,  # the "trained on N photos" mail says this
            "seconds": {k: round(v, 2) for k, v in result.seconds.items()},
            "files": files.model_dump(mode="json"),
        }
        pending_objects.settle(session, _keys(files))
    return found
