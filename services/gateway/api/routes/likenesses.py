"""Likenesses: start training on the accepted photos, list, view, download the LoRA, delete."""

import uuid

from fastapi import APIRouter, Response
from sqlalchemy import func, select

from services.gateway.api.deletion import FILES_DELETED_LATER, deleted_files
from services.gateway.api.deps import ConsentedUser, CurrentUser, IdempotencyKey, SessionDep, conflict, owned
from services.gateway.api.face_data import ACTIVE, cancel_jobs_of, likeness_files
from services.gateway.api.language import Refusal
from services.gateway.api.schemas import (
    DownloadOut,
    JobOut,
    LikenessIn,
    LikenessList,
    LikenessOut,
    LikenessStarted,
)
from services.gateway.idempotency import replay
from services.gateway.training import settle
from shared import pending_objects, storage
from shared.config import get_settings
from shared.contracts import TrainLikeness
from shared.contracts.likeness_files import DOWNLOAD_NAMES, DownloadFormat, LikenessFiles
from shared.jobs import IdempotencyConflict, enqueue, events
from shared.jobs.outbox import request_fingerprint
from shared.models import Job, Likeness, LikenessStatus, Photo, PhotoStatus, User
from shared.trigger_word import make_trigger_word

router = APIRouter(prefix="/likenesses", tags=["likenesses"])

KIND = TrainLikeness.kind
KEY_REUSED = "request.key_reused"


def photos_short(have: int, need: int, checking: int = 0) -> Refusal:
    """The 409 for too few accepted photos: while some are still being checked, it says so (they
    may be enough in a minute), else how many more to upload."""
    if checking:
        return conflict("training.photos_checking", count=checking)
    if have == 0:
        return conflict("training.no_photos", need=need)
    return conflict("training.photos_short", count=have, more=need - have)


@router.post("", status_code=202, response_model=LikenessStarted)
def start_training(
    body: LikenessIn, user: ConsentedUser, session: SessionDep, idempotency_key: IdempotencyKey
) -> LikenessStarted:
    """Train a likeness on the photos accepted so far; follow the returned job for progress."""
    # One start at a time per user: the row lock makes the checks below and the insert atomic.
    session.execute(select(User.id).where(User.id == user.id).with_for_update())
    fingerprint = request_fingerprint(KIND, body.model_dump())
    retried = replay(session, user.id, idempotency_key, TrainLikeness, fingerprint)
    if retried is not None:  # a retried request: answer as the first time
        likeness = session.scalar(select(Likeness).where(Likeness.job_id == retried.job.id))
        if likeness is None:
            raise conflict(KEY_REUSED)
        return LikenessStarted(likeness=LikenessOut.of(likeness), job=JobOut.of(retried.job))

    busy = session.scalar(
        select(Job.id).where(Job.user_id == user.id, Job.kind == KIND, Job.status.in_(ACTIVE))
    )
    if busy is not None:
        raise conflict("training.busy")
    accepted = session.execute(
        select(Photo.sha256, Photo.id)
        .where(Photo.user_id == user.id, Photo.status == PhotoStatus.accepted)
        .order_by(Photo.created_at, Photo.id)
    ).all()
    # Identical pictures (e.g. uploaded in parallel, past the upload's duplicate check) count once.
    first: dict[str, uuid.UUID] = {}
    for sha, pid in accepted:
        first.setdefault(sha, pid)
    photo_ids = list(first.values())
    need = get_settings().min_training_photos
    if len(photo_ids) < need:
        checking = session.scalar(
            select(func.count()).where(Photo.user_id == user.id, Photo.status == PhotoStatus.checking)
        )
        raise photos_short(len(photo_ids), need, checking or 0)

    likeness_id = uuid.uuid4()
    try:
        job_input = TrainLikeness(likeness_id=likeness_id, fingerprint=fingerprint)
        job = enqueue(session, job_input, user_id=user.id, idempotency_key=idempotency_key)
    except IdempotencyConflict:
        raise conflict(KEY_REUSED) from None
    likeness = Likeness(
        id=likeness_id,
        user_id=user.id,
        job_id=job.id,
        status=LikenessStatus.training,
        class_word=body.class_word,
        trigger_word=make_trigger_word(str(likeness_id)),
        base_model=get_settings().model_preset,  # the worker records the exact weights
        photo_ids=[str(p) for p in photo_ids],
    )
    session.add(likeness)
    session.commit()  # the likeness, the job and its outbox row together
    return LikenessStarted(likeness=LikenessOut.of(likeness), job=JobOut.of(job))


@router.get("", response_model=LikenessList)
def list_likenesses(user: CurrentUser, session: SessionDep) -> LikenessList:
    likenesses = session.scalars(
        select(Likeness).where(Likeness.user_id == user.id).order_by(Likeness.created_at.desc())
    ).all()
    settle(session, likenesses)
    return LikenessList(likenesses=[LikenessOut.of(lk) for lk in likenesses])


@router.get("/{likeness_id}", response_model=LikenessOut)
def read_likeness(likeness_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> LikenessOut:
    likeness = owned(session, Likeness, likeness_id, user, "Likeness")
    settle(session, [likeness])
    return LikenessOut.of(likeness)


@router.delete("/{likeness_id}", status_code=204, responses=FILES_DELETED_LATER)
def delete_likeness(likeness_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> Response:
    """Delete the likeness and its files. Its jobs still queued or running (its training, portrait
    jobs of it) are canceled: their workers stop at their next step and store nothing more. Portraits
    already made from it stay (they are the user's pictures; delete them on their own). 204, or 202
    with a sentence while S3 is down (the files are deleted once it answers)."""
    likeness = owned(session, Likeness, likeness_id, user, "Likeness")
    canceled = cancel_jobs_of(session, likeness)
    # Checkpoints included; a worker that uploads after this sees the row gone and cleans up.
    folder = likeness_files(likeness)
    session.delete(likeness)
    pending_objects.condemn(session, [folder])
    session.commit()
    for job in canceled:
        events.publish(job)
    return deleted_files([folder])


@router.get("/{likeness_id}/download", response_model=DownloadOut)
def download_likeness(
    likeness_id: uuid.UUID,
    user: CurrentUser,
    session: SessionDep,
    format: DownloadFormat = "diffusers",
) -> DownloadOut:
    """A short-lived link to the LoRA: `diffusers` (load_lora_weights) or `kohya` (A1111/ComfyUI)."""
    likeness = owned(session, Likeness, likeness_id, user, "Likeness")
    settle(session, [likeness])
    files = LikenessFiles.of(likeness.meta)
    key = files.key(format) if files else None
    if likeness.status != LikenessStatus.ready or not key:
        raise conflict("likeness.not_downloadable", status=likeness.status)
    filename = DOWNLOAD_NAMES.get(format) or key.rsplit("/", 1)[-1]
    return DownloadOut(url=storage.presign_get(key, filename=filename))
