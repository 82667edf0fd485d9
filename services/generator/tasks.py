"""The `generate` queue (GPU): portraits of a user's likeness in the chosen styles.

Input: {"likeness_id", "styles": [style ids], "count": portraits per style, "seed"?, "pose_id"?}
(`pose_id`: the user's pose photo, whose keypoints replace each style's pose template). The handler
moves data: the LoRA and the user's photos in from S3, the pipeline (services/generator/pipeline.py)
runs, PNG + thumbnail go to `users/<uid>/portraits/<job_id>/`, one Portrait row each. A retried
attempt draws the same seeds and writes the same keys and ids, so nothing is duplicated.
"""

from __future__ import annotations

import io
import logging
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import numpy as np
from celery.signals import worker_process_init
from PIL import Image
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from services.generator.likeness import DIFFUSERS_FILE, Likeness
from services.generator.metadata import thumbnail_jpeg
from shared import pending_objects, storage
from shared.config import get_settings
from shared.db import session_scope
from shared.images import open_upright
from shared.jobs import JobContext, JobError, job_task
from shared.ml.loading import base_model_id
from shared.models import Likeness as LikenessRow
from shared.models import Photo, Portrait, PosePhoto
from shared.pose import Pose, parse_openpose_json
from shared.queue import stop_consuming
from shared.quota import MAX_COUNT, portraits_made_today
from shared.styles import StyleError, get_style

log = logging.getLogger(__name__)
LOADED = 0.03  # share of the job for downloads; the pipeline reports the rest


_resident_lock = threading.Lock()


@cache
def _resident():
    from services.generator.pipeline import PortraitPipeline
    from shared import warm

    began = time.monotonic()
    pipeline = PortraitPipeline.from_preset()
    if pipeline.buckets:  # compiled: build or load every bucket before the first job
        seconds = pipeline.warm_up()
        log.info("compiled %d shape buckets: %s", len(seconds), seconds)
    warm.mark_warm(f"generator ready in {time.monotonic() - began:.1f} s")
    return pipeline


def resident_pipeline():
    """One pipeline per worker process: the base model stays resident between jobs. Loaded,
    compiled and warmed up once (by the warm-up thread at the pool process's start, or by the
    first job, which then waits for it); /readyz answers 503 until then (shared/warm.py)."""
    with _resident_lock:
        return _resident()


@worker_process_init.connect
def _warm_up_in_background(**_: object) -> None:
    """Load and compile in the pool process as soon as it starts (Celery kills a pool process
    whose init takes more than a few seconds, so this runs on a thread)."""
    from shared import warm

    if warm.enabled():
        threading.Thread(target=_warm_up_logged, name="generator-warm-up", daemon=True).start()


def _warm_up_logged() -> None:
    try:
        resident_pipeline()
    except Exception:  # the first job raises it again, with the job's error handling
        log.exception("generator warm-up failed")


@job_task("generate_portraits")
def generate_portraits_job(ctx: JobContext) -> dict:
    from services.generator.loras import WeightsNotRestored  # torch: only in the pool process
    from shared.ml.dtype_guard import DtypeDrift

    likeness_row, styles, count = _load_request(ctx)
    pose, pose_name = _load_pose(ctx)
    _check_daily_quota(ctx, len(styles) * count)
    ctx.progress(0.0, "loading likeness")
    clock = StageClock("load")
    seed = int(ctx.input.get("seed", ctx.job_id.int % 2**31))
    pipeline = resident_pipeline()
    made: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="portraits-") as tmp:
        likeness = _download_likeness(likeness_row, Path(tmp))
        ctx.progress(LOADED, "generating")
        share = (1 - LOADED) / len(styles)
        for index, style in enumerate(styles):

            def progress(fraction: float, stage: str, index: int = index, style=style) -> None:
                clock.enter("store" if stage == "done" else stage)
                ctx.progress(LOADED + share * (index + fraction), f"{style.name.en}: {stage}")

            clock.enter("prepare")  # the style's LoRAs baked in, prompts encoded
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
            except (WeightsNotRestored, DtypeDrift) as exc:
                # Another user's LoRA may be left in the weights, or the networks are no longer
                # in the dtype they were loaded in: this worker stops taking jobs.
                stop_consuming("generate", str(exc))
                raise JobError(
                    "worker_restarting",
                    "The portrait worker had a fault and restarts; your portraits will be made again.",
                    retryable=True,
                ) from exc
            made += [_store(ctx, likeness_row, result) for result in results]
    ctx.follow_up(
        "send_email",
        user_id=ctx.user_id,
        input={
            "template": "portraits_ready",
            "job_id": str(ctx.job_id),
            "event_key": f"job:{ctx.job_id}:portraits_ready",
        },
    )
    clock.enter(None)
    return {
        "portraits": len(made),
        "styles": [s.id for s in styles],
        "seed": seed,
        "ids": made,
        "seconds": clock.totals(),  # where the job's time went, for operators and benches
    }


class StageClock:
    """Wall seconds per stage name, summed over the styles of a job: `enter(name)` ends the
    current stage and starts `name` (None: stop). Stages are the pipeline's progress stages
    (txt2img, detail, beautify, detail2, upscale) plus "load" (pipeline, likeness download),
    "prepare" (a style's LoRAs and prompts) and "store" (S3 uploads and rows).
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


def _load_request(ctx: JobContext) -> tuple[dict, list, int]:
    try:
        styles = [get_style(s) for s in ctx.input.get("styles") or []]
    except StyleError as exc:
        raise JobError("unknown_style", str(exc)) from exc
    if not styles:
        raise JobError("no_styles", "Choose at least one style.")
    count = int(ctx.input.get("count", 1))
    if not 1 <= count <= MAX_COUNT:
        raise JobError("bad_count", f"Ask for 1 to {MAX_COUNT} portraits per style.")
    with session_scope() as session:
        row = session.get(LikenessRow, uuid.UUID(str(ctx.input["likeness_id"])))
        if row is None or row.user_id != ctx.user_id:
            raise JobError("likeness_deleted", "This likeness was deleted; train a new one.")
        if row.status != "ready":
            raise JobError("likeness_not_ready", f"This likeness is not ready (it is {row.status}).")
        serving = base_model_id()
        if row.base_model != serving:
            raise JobError(
                "likeness_base_mismatch",
                f"This likeness was trained for the base model {row.base_model}, and portraits "
                f"are made with {serving} now: train the likeness again.",
            )
        files = (row.meta or {}).get("files") or {}
        if not files.get("diffusers"):
            raise JobError("likeness_files_missing", "This likeness has no LoRA file; train it again.")
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
            "lora_key": files["diffusers"],
            "embeddings_key": files.get("embeddings"),  # absent for likenesses trained before it
            "photo_keys": list(photo_keys),
        }
    return request, styles, count


def _load_pose(ctx: JobContext) -> tuple[Pose | None, str | None]:
    """The user's pose photo asked for (keypoints from its row), named "photo:<id>"; none asked: None."""
    if not ctx.input.get("pose_id"):
        return None, None
    pose_id = uuid.UUID(str(ctx.input["pose_id"]))
    with session_scope() as session:
        row = session.get(PosePhoto, pose_id)
        if row is None or row.user_id != ctx.user_id:
            raise JobError("pose_deleted", "The pose photo was deleted; choose another pose.")
        if row.status != "ready" or not row.keypoints:
            raise JobError("pose_not_ready", f"The pose photo cannot be used (it is {row.status}).")
        return parse_openpose_json(row.keypoints), f"photo:{pose_id}"


def _check_daily_quota(ctx: JobContext, wanted: int) -> None:
    """Fair share of the GPU pool: at most `max_portraits_per_day` portraits per user per day
    (portraits of this job already stored by an earlier attempt do not count twice)."""
    limit = get_settings().max_portraits_per_day
    with session_scope() as session:
        made = portraits_made_today(session, ctx.user_id, except_job=ctx.job_id)
    if made + wanted > limit:
        left = max(limit - made, 0)
        raise JobError(
            "daily_limit",
            f"You can make {limit} portraits a day; {left} are left today. Ask for fewer or try tomorrow.",
        )


def _download_likeness(request: dict, folder: Path) -> Likeness:
    key = request["lora_key"]
    own = storage.user_prefix(request["user_id"])
    if not key.startswith(own) or not (request.get("embeddings_key") or own).startswith(own):
        raise JobError("foreign_object", "The likeness points outside its owner.")
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


def _store(ctx: JobContext, request: dict, result) -> str:
    """Upload one portrait and insert its row; the id comes from (job, style, seed), so a retry
    overwrites the same objects and finds the row already there."""
    portrait_id = uuid.uuid5(ctx.job_id, f"{result.style}:{result.seed}")
    prefix = storage.user_key(ctx.user_id, "portraits", str(ctx.job_id))
    key, thumb = f"{prefix}/{portrait_id}.png", f"{prefix}/{portrait_id}_thumb.jpg"
    with session_scope() as session:
        if session.get(LikenessRow, request["id"]) is None:
            _likeness_deleted(ctx, prefix)
    pending_objects.announce([key, thumb])  # no orphans if this worker dies before the row
    storage.put_bytes(key, result.png, "image/png")
    storage.put_bytes(thumb, thumbnail_jpeg(result.image), "image/jpeg")
    try:
        _insert_portrait(ctx, request, result, portrait_id, key, thumb)
    except IntegrityError as exc:
        if "portraits_likeness_id_fkey" not in str(exc.orig):
            raise
        # The likeness was deleted between the check above and the insert.
        _likeness_deleted(ctx, prefix, exc)
    return str(portrait_id)


def _likeness_deleted(ctx: JobContext, prefix: str, cause: Exception | None = None) -> None:
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
    raise JobError("likeness_deleted", "This likeness was deleted; train a new one.") from cause


def _insert_portrait(
    ctx: JobContext, request: dict, result, portrait_id: uuid.UUID, key: str, thumb: str
) -> None:
    with session_scope() as session:
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
