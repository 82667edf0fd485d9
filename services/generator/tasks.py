"""The `generate` queue (GPU): portraits of a user's likeness in the chosen styles.

Input and result: shared/contracts/generate_portraits.py. The handler moves data: the LoRA and
the user's photos in from S3, the pipeline (services/generator/pipeline.py) runs, PNG + thumbnail
go to `users/<uid>/portraits/<job_id>/`, one Portrait row each. A retried attempt draws the same
seeds and writes the same keys and ids, so nothing is duplicated.
"""

from __future__ import annotations

import io
import logging
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from celery.signals import worker_process_init
from PIL import Image
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from services.generator.likeness import Likeness
from services.generator.metadata import thumbnail_jpeg
from shared import pending_objects, storage
from shared.accounts import hold_account
from shared.contracts import ErrorCode, GeneratePortraits, PortraitsMade, SendEmail
from shared.contracts.likeness_files import DIFFUSERS_FILE, LikenessFiles
from shared.contracts.stages import DONE, JobStep
from shared.db import session_scope
from shared.images import open_upright
from shared.jobs import JobCanceled, JobContext, JobError, job_task
from shared.jobs.celery_app import stop_consuming
from shared.ml.loading import base_model_id
from shared.models import Likeness as LikenessRow
from shared.models import Photo, Portrait, PosePhoto
from shared.pose import Pose, parse_openpose_json
from shared.quota import check_daily_quota
from shared.styles import Style, StyleError, load_styles
from shared.warm import Resident

log = logging.getLogger(__name__)
LOADED = 0.03  # share of the job for downloads; the pipeline reports the rest


def _warm_pipeline():
    from services.generator.pipeline import PortraitPipeline

    pipeline = PortraitPipeline.from_preset()
    if pipeline.buckets:  # CUDA graphs or compiled: capture or compile every bucket before the first job
        seconds = pipeline.warm_up()
        log.info("warmed up %d shape buckets: %s", len(seconds), seconds)
    return pipeline


# One pipeline per worker process: the base model stays resident between jobs. Loaded, compiled
# and warmed up once, as soon as the pool process starts; /readyz answers 503 until then.
_resident = Resident(_warm_pipeline, "generator")
worker_process_init.connect(lambda **_: _resident.start_in_background(), weak=False)


def resident_pipeline():
    """The worker process's PortraitPipeline (shared.warm.Resident): a job that comes during
    the warm-up waits for it."""
    return _resident.get()


@job_task(GeneratePortraits)
def generate_portraits_job(ctx: JobContext[GeneratePortraits]) -> PortraitsMade:
    """The portraits of `ctx.input` (shared/contracts/generate_portraits.py), stored with rows."""
    from services.generator.lora_files import UnusableLora  # torch: only in the pool process
    from services.generator.loras import WeightsNotRestored
    from shared.ml.dtype_guard import DtypeDrift

    styles = _styles(ctx.input.styles)
    likeness_row = _load_likeness(ctx)
    pose, pose_name = _load_pose(ctx)
    count = ctx.input.count
    _check_daily_quota(ctx, len(styles) * count)
    ctx.progress(0.0, "loading likeness")
    clock = StageClock(JobStep.load)
    seed = ctx.input.seed if ctx.input.seed is not None else ctx.job_id.int % 2**31
    pipeline = resident_pipeline()
    made: list[str] = []
    with tempfile.TemporaryDirectory(prefix="portraits-") as tmp:
        likeness = _download_likeness(likeness_row, Path(tmp))
        ctx.progress(LOADED, "generating")
        share = (1 - LOADED) / len(styles)
        for index, style in enumerate(styles):

            def progress(fraction: float, stage: str, index: int = index, style=style) -> None:
                clock.enter(JobStep.store if stage == DONE else stage)
                ctx.progress(LOADED + share * (index + fraction), f"{style.name.en}: {stage}")

            clock.enter(JobStep.prepare)  # the style's LoRAs baked in, prompts encoded
            try:
                results = pipeline(
                    likeness,
                    style,
                    seed=seed + 1000 * index,
                    count=count,
                    progress=progress,
                    pose=pose,
                    pose_name=pose_name,
                )
            except UnusableLora as exc:
                # The same file fails the same way on every attempt: fail once, in words.
                raise JobError(ErrorCode.unusable_lora, [exc.sentence]) from exc
            except (WeightsNotRestored, DtypeDrift) as exc:
                # Another user's LoRA may be left in the weights, or the networks are no longer
                # in the dtype they were loaded in: this worker stops taking jobs.
                stop_consuming("generate", str(exc))
                raise JobError.of(ErrorCode.worker_restarting, retryable=True) from exc
            for result in results:
                ctx.check_canceled()  # canceled while the style was drawn: store nothing more
                made.append(_store(ctx, likeness_row, result))
    ctx.follow_up(SendEmail.portraits_ready(ctx.job_id), user_id=ctx.user_id)
    clock.enter(None)
    return PortraitsMade(
        portraits=len(made),
        styles=[s.id for s in styles],
        seed=seed,
        ids=made,
        seconds=clock.totals(),  # where the job's time went, for operators and benches
    )


class StageClock:
    """Wall seconds per stage name, summed over the styles of a job: `enter(name)` ends the
    current stage and starts `name` (None: stop). Stages are the pipeline's progress stages
    (shared/contracts/stages.py: Stage) plus the job's own steps (JobStep: load, prepare, store).
    GPU work is asynchronous, so a stage's seconds include what the next synchronising call waits
    for; each stage ends in a host copy of its images, which bounds the spill."""

    def __init__(self, first: str) -> None:
        self.stage: str | None = first
        self.began = time.monotonic()
        self.seconds: dict[str, float] = {}

    def enter(self, stage: str | None) -> None:
        now = time.monotonic()
        if self.stage is not None and stage != self.stage:
            self.seconds[self.stage] = self.seconds.get(self.stage, 0.0) + now - self.began
        if stage != self.stage:
            self.stage, self.began = stage, now

    def totals(self) -> dict[str, float]:
        return {name: round(seconds, 2) for name, seconds in self.seconds.items()}


def _styles(ids: list[str]) -> list[Style]:
    """The styles asked for, in that order (the contract checked that there is at least one)."""
    try:
        known = load_styles()
    except StyleError as exc:
        raise JobError.of(ErrorCode.unknown_style, styles=", ".join(ids)) from exc
    unknown = [s for s in ids if s not in known]
    if unknown:
        raise JobError.of(ErrorCode.unknown_style, styles=", ".join(unknown))
    return [known[s] for s in ids]


def _load_likeness(ctx: JobContext[GeneratePortraits]) -> dict:
    """The likeness row's facts the job needs; refuses one deleted, not ready, trained for other
    base weights or without its LoRA file."""
    with session_scope() as session:
        row = session.get(LikenessRow, ctx.input.likeness_id)
        if row is None or row.user_id != ctx.user_id:
            raise JobError.of(ErrorCode.likeness_deleted)
        if row.status != "ready":
            raise JobError.of(ErrorCode.likeness_not_ready, status=row.status)
        serving = base_model_id()
        if row.base_model != serving:
            raise JobError.of(ErrorCode.likeness_base_mismatch, trained=row.base_model, serving=serving)
        files = LikenessFiles.of(row.meta)
        if files is None:
            raise JobError.of(ErrorCode.likeness_files_missing)
        photo_keys = session.scalars(
            select(Photo.object_key).where(
                Photo.id.in_([uuid.UUID(p) for p in row.photo_ids or []]),
                Photo.user_id == ctx.user_id,
            )
        ).all()
        request = {
            "id": row.id,
            "user_id": row.user_id,
            "trigger_word": row.trigger_word,
            "class_word": row.class_word,
            "lora_key": files.diffusers,
            "embeddings_key": files.embeddings,  # absent for likenesses trained before it
            "photo_keys": list(photo_keys),
        }
    return request


def _load_pose(ctx: JobContext[GeneratePortraits]) -> tuple[Pose | None, str | None]:
    """The user's pose photo asked for (keypoints from its row), named "photo:<id>"; none asked: None."""
    pose_id = ctx.input.pose_id
    if pose_id is None:
        return None, None
    with session_scope() as session:
        row = session.get(PosePhoto, pose_id)
        if row is None or row.user_id != ctx.user_id:
            raise JobError.of(ErrorCode.pose_deleted)
        if row.status != "ready" or not row.keypoints:
            raise JobError.of(ErrorCode.pose_not_ready, status=row.status)
        return parse_openpose_json(row.keypoints), f"photo:{pose_id}"


def _check_daily_quota(ctx: JobContext[GeneratePortraits], wanted: int) -> None:
    """Fair share of the GPU pool (shared/quota.py); portraits of this job already stored by an
    earlier attempt do not count twice."""
    with session_scope() as session:
        over = check_daily_quota(session, ctx.owner, wanted, except_job=ctx.job_id)
    if over is not None:
        raise JobError.of(ErrorCode.daily_limit, limit=over.limit, left=over.left)


def _download_likeness(request: dict, folder: Path) -> Likeness:
    key = request["lora_key"]
    own = storage.user_prefix(request["user_id"])
    if not key.startswith(own) or not (request.get("embeddings_key") or own).startswith(own):
        raise JobError.of(ErrorCode.foreign_object, what="The likeness")
    path = folder / DIFFUSERS_FILE
    path.write_bytes(storage.get_bytes(key))
    return Likeness(
        path,
        trigger_word=request["trigger_word"],
        class_word=request["class_word"],
        reference_embeddings=_reference_embeddings(request),
    )


def _reference_embeddings(request: dict) -> np.ndarray:
    """(n, 128) float32: the embeddings the trainer stored with the likeness, or, for a likeness
    trained before they were stored (or if the object is gone), the user's photos embedded now."""
    from services.generator.likeness import embed_images

    data = storage.get_bytes_or_none(request["embeddings_key"]) if request.get("embeddings_key") else None
    if data is not None:
        return np.load(io.BytesIO(data), allow_pickle=False).astype(np.float32).reshape(-1, 128)
    return embed_images(_photos(request["photo_keys"]))


def _photos(keys: list[str]) -> Iterator[Image.Image]:
    """The user's photos, decoded in memory one at a time."""
    for key in keys:
        data = storage.get_bytes_or_none(key)
        if data is None:
            continue  # deleted or expired since training: scored against the rest
        yield open_upright(io.BytesIO(data))


def _store(ctx: JobContext[GeneratePortraits], request: dict, result) -> str:
    """Upload one portrait and insert its row; the id comes from (job, style, seed), so a retry
    overwrites the same objects and finds the row already there.

    Raises JobCanceled when the account is being erased (its objects deleted, or left announced for
    the sweep), JobError("likeness_deleted") when the likeness is gone (see _likeness_deleted)."""
    portrait_id = uuid.uuid5(ctx.job_id, f"{result.style}:{result.seed}")
    prefix = storage.user_key(ctx.owner, "portraits", str(ctx.job_id))
    key, thumb = f"{prefix}/{portrait_id}.png", f"{prefix}/{portrait_id}_thumb.jpg"
    with session_scope() as session:
        if not hold_account(session, ctx.owner):  # erasure under way: store nothing more
            raise JobCanceled()
        if session.get(LikenessRow, request["id"]) is None:
            _likeness_deleted(ctx, prefix)
        if session.get(Portrait, portrait_id) is not None:
            # stored by an earlier attempt: announcing its keys again would hand the objects of a
            # committed row to the sweep if this attempt died before its own insert
            return str(portrait_id)
    pending_objects.announce([key, thumb])  # no orphans if this worker dies before the row
    storage.put_bytes(key, result.png, "image/png")
    storage.put_bytes(thumb, thumbnail_jpeg(result.image), "image/jpeg")
    try:
        stored = _insert_portrait(ctx, request, result, portrait_id, key, thumb)
    except IntegrityError as exc:
        if "portraits_likeness_id_fkey" not in str(exc.orig):
            raise
        # The likeness was deleted between the check above and the insert.
        _likeness_deleted(ctx, prefix, exc)
    if not stored:
        # The erasure began after the check above and may have listed the prefix before these
        # writes: delete them now; if S3 fails, their announcement leads the sweep to them.
        pending_objects.delete_now([key, thumb])
        raise JobCanceled()
    return str(portrait_id)


def _likeness_deleted(
    ctx: JobContext[GeneratePortraits], prefix: str, cause: Exception | None = None
) -> None:
    """The likeness was deleted while this job ran: delete this job's objects that have no Portrait
    row (the rows already stored keep theirs, with `likeness_id` set NULL) and fail at once.

    Raises JobError("likeness_deleted"), not retryable: a retry could never succeed.
    """
    with session_scope() as session:
        kept = session.execute(
            select(Portrait.object_key, Portrait.thumb_key).where(Portrait.job_id == ctx.job_id)
        ).all()
    known = {k for row in kept for k in row}
    storage.delete_keys([k for k in storage.list_keys(prefix + "/") if k not in known])
    raise JobError.of(ErrorCode.likeness_deleted) from cause


def _insert_portrait(
    ctx: JobContext[GeneratePortraits], request: dict, result, portrait_id: uuid.UUID, key: str, thumb: str
) -> bool:
    """Commit the Portrait row and settle its objects under the account hold (shared/accounts.py);
    False, committing nothing, when the account is being erased."""
    with session_scope() as session:
        if not hold_account(session, ctx.owner):
            return False
        if session.get(Portrait, portrait_id) is None:
            session.add(
                Portrait(
                    id=portrait_id,
                    user_id=ctx.user_id,
                    job_id=ctx.job_id,
                    likeness_id=request["id"],
                    style=result.style,
                    seed=result.seed,
                    object_key=key,
                    thumb_key=thumb,
                    width=result.width,
                    height=result.height,
                    identity_score=result.identity_score,
                    face_found=result.face_found,
                    meta=result.meta,
                )
            )
        pending_objects.settle(session, [key, thumb])  # with the row (or on a retry, found)
    return True
