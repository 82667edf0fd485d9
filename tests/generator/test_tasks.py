"""The `generate_portraits` handler in this process, on the real stack (Postgres, S3, Redis):
S3 in and out, Portrait rows, the mail follow-up, a retried attempt, the daily quota."""

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import func, select

from services.generator.metadata import read_png_metadata
from services.generator.tasks import generate_portraits_job
from shared import pending_objects, storage
from shared.config import get_settings
from shared.contracts import GeneratePortraits
from shared.db import session_scope
from shared.jobs import enqueue, run_job
from shared.jobs.state import transition
from shared.ml.loading import base_model_id
from shared.models import Job, JobStatus, Likeness, PendingObject, Portrait, PosePhoto, User
from tests.generator.test_service import _ready_likeness


def _new_user() -> uuid.UUID:
    uid = uuid.uuid4()
    with session_scope() as session:
        session.add(User(id=uid, email=f"{uid.hex}@example.com", password_hash="x"))
    return uid


_made: list[uuid.UUID] = []  # the jobs the running test enqueued


@pytest.fixture(autouse=True)
def _leave_no_runnable_job() -> Iterator[None]:
    """Cancel what a test left queued (the retried attempt of the unrestored-weights test).
    `enqueue` writes an outbox row, and while the session's platform is up its relay puts every job
    on the `generate` queue: a job left queued is run for real by the next generate worker a test
    starts (test_warm_up's, then photos/test_erasure_in_flight's), ahead of that test's own job."""
    _made.clear()
    yield
    with session_scope() as session:
        for job_id in _made:
            transition(session, job_id, JobStatus.queued, JobStatus.canceled, stage="canceled")


def _job(uid: uuid.UUID, likeness_id: uuid.UUID, styles: list[str], count: int, **extra) -> uuid.UUID:
    with session_scope() as session:
        # model_construct: also rows the contract would refuse, as an older client may have queued
        job_input = GeneratePortraits.model_construct(
            likeness_id=likeness_id, styles=styles, count=count, **extra
        )
        job = enqueue(session, job_input, user_id=uid)
        _made.append(job.id)
        return job.id


def _job_row(job_id: uuid.UUID) -> Job:
    with session_scope() as session:
        job = session.get(Job, job_id)
        session.expunge(job)
        return job


def test_handler_stores_portraits_rows_and_mail(stack) -> None:
    storage.ensure_bucket()
    uid = _new_user()
    likeness_id = _ready_likeness(uid)
    job_id = _job(uid, likeness_id, ["soft-beauty"], 2)
    run_job(job_id, generate_portraits_job)
    job = _job_row(job_id)
    assert job.status == JobStatus.succeeded, (job.error_code, job.error_message)
    assert job.result["portraits"] == 2
    with session_scope() as session:
        rows = session.scalars(select(Portrait).where(Portrait.job_id == job_id)).all()
        mails = session.scalars(select(Job).where(Job.user_id == uid, Job.kind == "send_email")).all()
        keys = [(r.object_key, r.thumb_key, r.seed, r.width) for r in rows]
    assert len(keys) == 2 and {k[3] for k in keys} == {256}
    for key, thumb, seed, _ in keys:
        assert key.startswith(f"users/{uid}/portraits/{job_id}/") and key.endswith(".png")
        parameters, meta = read_png_metadata(storage.get_bytes(key))
        assert f"Seed: {seed}" in parameters and meta["style"] == "soft-beauty"
        assert storage.get_bytes(thumb)[:3] == b"\xff\xd8\xff"  # a JPEG thumbnail
    assert [m.input["template"] for m in mails] == ["portraits_ready"]
    assert mails[0].input["job_id"] == str(job_id)

    # A second attempt of the same job (e.g. after a lost worker) writes the same ids and keys.
    with session_scope() as session:
        session.get(Job, job_id).status = JobStatus.queued
    run_job(job_id, generate_portraits_job)
    with session_scope() as session:
        again = session.scalars(select(Portrait).where(Portrait.job_id == job_id)).all()
        assert sorted(r.object_key for r in again) == sorted(k[0] for k in keys)
    stored = storage.list_keys(f"users/{uid}/portraits/{job_id}/")
    assert len(stored) == 4
    # The retry announced its writes again (shared/pending_objects.py) and settled them with the rows
    # it found: the hourly sweep, past its grace, deletes none of these portraits.
    with session_scope() as session:
        assert session.scalar(select(func.count()).where(PendingObject.key.in_(stored))) == 0
    pending_objects.sweep(grace_seconds=0)
    assert sorted(storage.list_keys(f"users/{uid}/portraits/{job_id}/")) == sorted(stored)


@pytest.mark.parametrize(
    ("styles", "count", "code"),
    [(["nope"], 1, "unknown_style"), (["soft-beauty"], 9, "bad_count"), ([], 1, "no_styles")],
)
def test_bad_requests_fail_in_words(stack, styles, count, code) -> None:
    uid = _new_user()
    job_id = _job(uid, uuid.uuid4(), styles, count)
    run_job(job_id, generate_portraits_job)
    job = _job_row(job_id)
    assert job.status == JobStatus.failed and job.error_code == code and job.error_message


def test_daily_quota_and_foreign_likeness(stack, monkeypatch) -> None:
    storage.ensure_bucket()
    uid, other = _new_user(), _new_user()
    likeness_id = _ready_likeness(uid)
    job_id = _job(other, likeness_id, ["soft-beauty"], 1)  # someone else's likeness
    run_job(job_id, generate_portraits_job)
    assert _job_row(job_id).error_code == "likeness_deleted"

    with session_scope() as session:  # trained on other weights than the worker serves
        session.get(Likeness, likeness_id).base_model = "epicrealism"
    job_id = _job(uid, likeness_id, ["soft-beauty"], 1)
    run_job(job_id, generate_portraits_job)
    assert _job_row(job_id).error_code == "likeness_base_mismatch"
    with session_scope() as session:
        session.get(Likeness, likeness_id).base_model = base_model_id("tiny")

    monkeypatch.setenv("MAX_PORTRAITS_PER_DAY", "1")
    get_settings.cache_clear()
    try:
        job_id = _job(uid, likeness_id, ["soft-beauty", "black-white"], 1)
        run_job(job_id, generate_portraits_job)
        job = _job_row(job_id)
        assert job.error_code == "daily_limit" and "1 portraits a day" in job.error_message
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()


def test_identity_references_come_from_the_likeness_not_the_photos(stack) -> None:
    """The trainer's stored embeddings are used as they are; photos are embedded only for a
    likeness trained before embeddings were stored; a key outside the owner is refused."""
    import io

    import numpy as np

    from services.generator.tasks import _reference_embeddings
    from shared.jobs import JobError

    storage.ensure_bucket()
    uid = _new_user()
    stored = np.random.default_rng(0).normal(size=(3, 128)).astype(np.float32)
    key = storage.user_key(uid, "likenesses", "x", "embeddings.npy")
    buffer = io.BytesIO()
    np.save(buffer, stored)
    storage.put_bytes(key, buffer.getvalue(), "application/octet-stream")
    request = {"user_id": uid, "embeddings_key": key, "photo_keys": ["users/none/photos/gone.jpg"]}
    assert np.array_equal(_reference_embeddings(request), stored)

    likeness_id = _ready_likeness(uid)  # has a photo of a face, no stored embeddings
    with session_scope() as session:
        photo_keys = [
            storage.user_key(uid, "photos", f"{pid}.jpg")
            for pid in session.get(Likeness, likeness_id).photo_ids
        ]
    older = _reference_embeddings({"user_id": uid, "embeddings_key": None, "photo_keys": photo_keys})
    assert older.shape == (1, 128)

    from services.generator.tasks import _download_likeness

    other = storage.user_key(uuid.uuid4(), "likenesses", "x", "embeddings.npy")
    with pytest.raises(JobError, match="outside its owner"):
        _download_likeness(
            {"user_id": uid, "lora_key": storage.user_key(uid, "l"), "embeddings_key": other}, None
        )


def test_a_worker_with_unrestored_weights_retries_the_job_elsewhere(stack, caplog) -> None:
    """Baked mode (the GPU default) after a failed restore: the job is not run on these weights,
    it goes back for another worker, and this one asks to stop (shared.jobs.celery_app.stop_consuming;
    outside a Celery task it can only say so: tests/jobs/test_stop_consuming.py runs it)."""
    from services.generator import loras
    from services.generator.tasks import resident_pipeline

    storage.ensure_bucket()
    uid = _new_user()
    job_id = _job(uid, _ready_likeness(uid), ["soft-beauty"], 1)
    pipeline = resident_pipeline()
    saved_mode = pipeline._loras
    pipeline._loras = loras.BakedLoras
    loras._weights_damaged = "injected: CUDA error"
    try:
        run_job(job_id, generate_portraits_job)
    finally:
        loras._weights_damaged = None
        pipeline._loras = saved_mode
    job = _job_row(job_id)
    assert (job.status, job.error_code) == (JobStatus.queued, "worker_restarting")  # retried
    assert "stops taking generate tasks" in caplog.text or "cannot stop consuming" in caplog.text
    with session_scope() as session:
        assert session.scalars(select(Portrait).where(Portrait.job_id == job_id)).all() == []


def _pose_row(uid: uuid.UUID, status: str = "ready") -> uuid.UUID:
    """A pose photo row with the real keypoints of skimage's astronaut (MediaPipe BlazePose)."""
    from PIL import Image
    from skimage.data import astronaut

    from shared.blazepose import estimate_pose

    pose_id = uuid.uuid4()
    keypoints = estimate_pose(Image.fromarray(astronaut())).to_openpose_json(512, 512)
    with session_scope() as session:
        session.add(
            PosePhoto(
                id=pose_id,
                user_id=uid,
                object_key=f"users/{uid}/poses/{pose_id}.jpg",
                content_type="image/jpeg",
                width=512,
                height=512,
                size_bytes=1,
                sha256="0" * 64,
                status=status,
                keypoints=keypoints if status == "ready" else None,
            )
        )
    return pose_id


def test_pose_photo_replaces_the_template_and_is_recorded(stack) -> None:
    storage.ensure_bucket()
    uid, other = _new_user(), _new_user()
    likeness_id = _ready_likeness(uid)
    pose_id = _pose_row(uid)
    pngs = {}
    for name, extra in (("template", {}), ("photo", {"pose_id": str(pose_id)})):
        job_id = _job(uid, likeness_id, ["soft-beauty"], 1, seed=5, **extra)
        run_job(job_id, generate_portraits_job)
        job = _job_row(job_id)
        assert job.status == JobStatus.succeeded, (job.error_code, job.error_message)
        with session_scope() as session:
            key = session.scalars(select(Portrait.object_key).where(Portrait.job_id == job_id)).one()
        pngs[name] = storage.get_bytes(key)
    parameters, meta = read_png_metadata(pngs["photo"])
    assert (
        meta["pose"] == f"photo:{pose_id}"
        and "Module: none, Model: control_v11p_sd15_openpose [cab727d4]" in parameters
    )
    assert read_png_metadata(pngs["template"])[1]["pose"] == "headshot_three_quarter"
    assert pngs["photo"] != pngs["template"]  # same seed, another control image

    rejected = _pose_row(uid, "rejected")
    for owner, pid, code in ((other, pose_id, "pose_deleted"), (uid, rejected, "pose_not_ready")):
        job_id = _job(owner, _ready_likeness(owner), ["soft-beauty"], 1, pose_id=str(pid))
        run_job(job_id, generate_portraits_job)
        assert _job_row(job_id).error_code == code


@pytest.mark.parametrize("when", ["before_store", "during_store"])
def test_likeness_deleted_mid_job_fails_at_once_and_leaves_no_orphans(stack, monkeypatch, when) -> None:
    """Deleting the likeness while its 2nd style runs: the job fails `likeness_deleted` in its first
    attempt (no crash, no retry), the 1st style's portraits keep their rows and objects, and no object
    without a row is left. `before_store`: deleted while the 2nd style is drawn (seen by the check
    before upload); `during_store`: deleted after the upload, before the insert (FK violation)."""
    from services.generator import tasks
    from shared.jobs import JobContext

    storage.ensure_bucket()
    uid = _new_user()
    likeness_id = _ready_likeness(uid)
    job_id = _job(uid, likeness_id, ["soft-beauty", "black-white"], 1)

    def delete_likeness() -> None:
        with session_scope() as session:
            row = session.get(Likeness, likeness_id)
            if row is not None:
                session.delete(row)

    if when == "before_store":
        progress = JobContext.progress

        def progress_then_delete(self, fraction, stage=None, **detail):
            progress(self, fraction, stage, **detail)
            if stage and stage.startswith("Black"):
                delete_likeness()

        monkeypatch.setattr(JobContext, "progress", progress_then_delete)
    else:
        thumbnail, calls = tasks.thumbnail_jpeg, []

        def thumbnail_then_delete(image):
            calls.append(1)
            if len(calls) == 2:
                delete_likeness()
            return thumbnail(image)

        monkeypatch.setattr(tasks, "thumbnail_jpeg", thumbnail_then_delete)

    run_job(job_id, generate_portraits_job)
    job = _job_row(job_id)
    assert (job.status, job.error_code, job.attempts) == (JobStatus.failed, "likeness_deleted", 1)
    with session_scope() as session:
        # The user deleted it: the answer says so; no "something went wrong on our side" mail.
        mails = session.scalars(select(Job).where(Job.user_id == uid, Job.kind == "send_email")).all()
        assert [m.input["template"] for m in mails] == []
        rows = session.scalars(select(Portrait).where(Portrait.job_id == job_id)).all()
        kept = sorted(k for r in rows for k in (r.object_key, r.thumb_key))
        assert [r.style for r in rows] == ["soft-beauty"] and rows[0].likeness_id is None
    assert sorted(storage.list_keys(f"users/{uid}/portraits/{job_id}/")) == kept
