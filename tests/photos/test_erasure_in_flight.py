"""Erasing an account while its work runs: a likeness training and portraits generating (real
`train` and `generate` workers, tiny preset), for a user with photos, a pose photo and a likeness.
Afterwards no row and no object of the user is left (the bucket is listed), nothing is stored later
by the stopped workers, the goodbye mail is delivered, and the address is gone from every job input
once it was sent. Withdrawing consent at the same point deletes the face data the same way and keeps
the account with the portraits made before it."""

import contextlib
import os
import signal
import time
import uuid
from collections.abc import Iterator
from typing import NamedTuple

import pytest
from sqlalchemy import func, select, text, update

from shared import storage
from shared.db import session_scope
from shared.models import Job, JobStatus, Portrait, User
from tests.conftest import Api, Platform, Processes, wait_until
from tests.generator.test_service import WORKER_ENV, _ready_likeness
from tests.jobs.test_event_order import _next_message, _subscribed
from tests.jobs.test_worker_lifecycle import _job
from tests.notifier.test_notify_worker import mails_to
from tests.pictures import astronaut, jpeg
from tests.trainer.test_service import TRAIN_WORKER_ENV, start, upload_accepted

TABLES = (
    "users", "photos", "pose_photos", "jobs", "likenesses", "portraits", "refresh_tokens", "email_tokens",
)  # fmt: skip


def _rows(uid: uuid.UUID) -> int:
    with session_scope() as session:
        key = {"users": "id"}
        return sum(
            session.execute(
                text(f"SELECT count(*) FROM {t} WHERE {key.get(t, 'user_id')} = :u"), {"u": uid}
            ).scalar()
            for t in TABLES
        )


def _ended(job_ids: list[str]) -> bool:
    """Every job of `job_ids` canceled, or its row already deleted."""
    with session_scope() as session:
        rows = session.scalars(select(Job).where(Job.id.in_([uuid.UUID(j) for j in job_ids]))).all()
        return all(row.status is JobStatus.canceled for row in rows)


def _portraits(uid: uuid.UUID) -> int:
    with session_scope() as session:
        return session.scalar(select(func.count(Portrait.id)).where(Portrait.user_id == uid))


class _WorkUnderWay(NamedTuple):
    user: object  # tests.conftest's signed-in user
    uid: uuid.UUID
    jobs: list[str]  # the generation's and the training's job ids, both running
    workers: tuple  # the train and generate worker processes


def _work_under_way(api: Api, procs: Processes) -> _WorkUnderWay:
    """A user with 10 accepted photos, a pose photo and a ready likeness, whose portrait job has
    stored its first portrait and whose second likeness's training has stored its first
    checkpoint, both still running (real `train` and `generate` workers, tiny preset)."""
    train = procs.worker("train", **TRAIN_WORKER_ENV)
    generate = procs.worker("generate", **WORKER_ENV)
    user = api.new_user()
    uid = uuid.UUID(api.get("/v1/me", headers=user.auth).json()["id"])
    with session_scope() as session:  # the goodbye mail goes to confirmed addresses
        session.execute(update(User).where(User.id == uid).values(email_verified_at=func.now()))
    upload_accepted(api, user, 10)
    pose = api.post(  # a pose photo (its own table and objects): erased like every other photo
        "/v1/poses", headers=user.auth, files={"file": ("pose.jpg", jpeg(astronaut()), "image/jpeg")}
    )
    assert pose.status_code == 201, pose.text
    wait_until(
        lambda: storage.list_keys(storage.user_key(uid, "poses")), timeout=120, what="a pose photo stored"
    )
    ready = _ready_likeness(uid)  # a trained likeness to make portraits with
    body = {"likeness_id": str(ready), "styles": ["studio-business", "black-white"], "count": 8}
    portraits = api.post("/v1/portraits", json=body, headers=user.auth)
    assert portraits.status_code == 202, portraits.text
    wait_until(lambda: _portraits(uid) >= 1, timeout=240, what="a first portrait stored")
    training = start(api, user)  # the generation has 15 portraits to go: it runs on meanwhile
    assert training.status_code == 202, training.text
    jobs = [portraits.json()["job"]["id"], training.json()["job"]["id"]]
    wait_until(
        lambda: storage.list_keys(storage.user_key(uid, "likenesses", training.json()["likeness"]["id"])),
        timeout=240,
        what="a first training checkpoint",
    )
    return _WorkUnderWay(user, uid, jobs, (train, generate))


@contextlib.contextmanager
def _workers_paused(work: _WorkUnderWay) -> Iterator[None]:
    """Both workers stopped (SIGSTOP) while the block asks for the deletion that cancels their jobs:
    on a machine where one of them runs faster, its job could end first (a tiny training has seconds
    to go after its first checkpoint). Paused for less than JOB_STALE_SECONDS (10 s), so no reaper
    hands a job on. A worker paused inside a transaction (a progress write) holds its job's row:
    then the erasure cancels it once the worker goes on; a withdrawal, which waits for its locks at
    most DATABASE_LOCK_TIMEOUT_MS, is refused and asked again (the test's own retry)."""
    for worker in work.workers:
        os.killpg(worker.pid, signal.SIGSTOP)
    try:
        assert [_job(j).status for j in work.jobs] == ["running", "running"], "work ended before the deletion"
        yield
        with contextlib.suppress(TimeoutError):
            wait_until(lambda: _ended(work.jobs), timeout=6, what="both jobs canceled by the deletion")
    finally:
        for worker in work.workers:
            os.killpg(worker.pid, signal.SIGCONT)


def _workers_stopped_their_jobs(work: _WorkUnderWay) -> None:
    for worker in work.workers:
        wait_until(
            lambda w=worker: "canceled during attempt" in open(w.log_path, errors="replace").read(),  # noqa: SIM115
            timeout=120,
            what="the worker to stop its job",
        )
    time.sleep(3)  # a worker that went on would store its next portrait or checkpoint by now


@pytest.mark.slow  # ~2-3 min: train and generate workers, a training and a generation under way
def test_erasure_while_training_and_generating_leaves_nothing(
    api: Api, platform: Platform, procs: Processes
) -> None:
    work = _work_under_way(api, procs)
    user, uid = work.user, work.uid
    with _workers_paused(work):
        assert api.delete("/v1/me", headers=user.auth).status_code == 202
    wait_until(lambda: _rows(uid) == 0, timeout=120, what="every row of the user deleted")
    wait_until(lambda: storage.list_keys(storage.user_prefix(uid)) == [], timeout=60, what="no object")
    _workers_stopped_their_jobs(work)
    assert storage.list_keys(storage.user_prefix(uid)) == [] and _rows(uid) == 0

    [goodbye] = wait_until(
        lambda: [m for m in mails_to(platform, user.email) if m["Subject"] == "Your data was deleted"],
        timeout=60,
        what="the goodbye mail",
    )

    def address_in_jobs() -> int:
        with session_scope() as session:
            return session.execute(
                text("SELECT count(*) FROM jobs WHERE input::text LIKE :e"), {"e": f"%{user.email}%"}
            ).scalar()

    wait_until(lambda: address_in_jobs() == 0, timeout=30, what="the address gone from job inputs")


@pytest.mark.slow  # ~2-3 min, like the erasure above
def test_withdrawing_consent_while_training_and_generating_keeps_only_the_portraits_made(
    api: Api, procs: Processes
) -> None:
    """DELETE /v1/me/consent (GDPR Art. 7(3)) while a training and a portrait job run: both jobs
    are canceled, every photo, pose photo, likeness and checkpoint goes (rows and objects), and
    nothing is made from the face data afterwards. The account stays, with the portraits made
    before the withdrawal (rows and their objects, no orphan object)."""
    work = _work_under_way(api, procs)
    user, uid = work.user, work.uid
    with _workers_paused(work):
        withdrawn = api.delete("/v1/me/consent", headers=user.auth)
    if withdrawn.status_code != 200:
        # A worker was paused inside a transaction that holds the account row (storing a portrait
        # or a checkpoint): the withdrawal, which locks it, could not wait. Asked again once it went on.
        withdrawn = api.delete("/v1/me/consent", headers=user.auth)
    assert withdrawn.status_code == 200, withdrawn.text
    with session_scope() as session:
        withdrawn_at = session.scalar(select(func.now()))
    counts = {k: withdrawn.json()[k] for k in ("poses", "likenesses", "jobs_canceled")}
    assert counts == {"poses": 1, "likenesses": 2, "jobs_canceled": 2}, withdrawn.text
    assert withdrawn.json()["photos"] >= 10, withdrawn.text
    _workers_stopped_their_jobs(work)
    assert [_job(j).status for j in work.jobs] == ["canceled", "canceled"]

    def face_data_left() -> list[str]:
        return [
            key for folder in ("photos", "poses", "likenesses")
            for key in storage.list_keys(storage.user_key(uid, folder))
        ]  # fmt: skip

    wait_until(lambda: face_data_left() == [], timeout=60, what="no photo, pose or likeness object")
    with session_scope() as session:
        columns = (Portrait.object_key, Portrait.thumb_key, Portrait.created_at)
        kept = session.execute(select(*columns).where(Portrait.user_id == uid)).all()
        left = {
            t: session.execute(text(f"SELECT count(*) FROM {t} WHERE user_id = :u"), {"u": uid}).scalar()
            for t in ("photos", "pose_photos", "likenesses")
        }
    assert left == {"photos": 0, "pose_photos": 0, "likenesses": 0}
    assert len(kept) >= 1, "the portraits made before the withdrawal stay"
    made_after = [row for row in kept if row.created_at > withdrawn_at]
    assert not made_after, "a portrait was made from the face data after the withdrawal"
    objects = storage.list_keys(storage.user_key(uid, "portraits"))
    assert sorted(objects) == sorted(key for row in kept for key in row[:2])  # no orphan, none missing
    assert api.get("/v1/me", headers=user.auth).json()["face_consent_at"] is None
    again = api.post(
        "/v1/photos", headers=user.auth, files=[("files", ("a.jpg", jpeg(astronaut()), "image/jpeg"))]
    )
    assert again.status_code == 403, again.text  # consent must be given again first


def test_erasure_cancels_the_users_jobs_before_it_deletes_a_file(stack, monkeypatch) -> None:  # noqa: ANN001
    """A worker still running a job of the user would store files after the erasure listed the
    bucket: the erasure first ends every queued or running job of the user (their workers see it at
    their next progress report and stop), and only then deletes."""
    from services.photos.erasure import erase_user
    from shared.jobs import run_job
    from shared.models import Job, JobStatus

    uid = uuid.uuid4()
    with session_scope() as session:
        session.add(User(id=uid, email=f"{uid.hex}@example.com", password_hash="x"))
        session.flush()
        # No outbox rows: nothing here is published to a running worker.
        running = Job(kind="train_likeness", status=JobStatus.running, user_id=uid, input={}, attempts=1)
        queued = Job(kind="generate_portraits", status=JobStatus.queued, user_id=uid, input={})
        erase = Job(kind="erase_user", status=JobStatus.queued, user_id=uid, input={})
        session.add_all([running, queued, erase])
        session.flush()
        erase_id = erase.id
    storage.put_bytes(storage.user_key(uid, "photos", "a.jpg"), jpeg(astronaut()), "image/jpeg")

    at_delete: dict[str, str] = {}
    delete_prefix = storage.delete_prefix

    def statuses_then_delete(prefix: str) -> int:  # what the user's other jobs are when files go
        with session_scope() as session:
            others = session.scalars(select(Job).where(Job.user_id == uid, Job.id != erase_id))
            at_delete.update({job.kind: str(job.status) for job in others})
        return delete_prefix(prefix)

    monkeypatch.setattr(storage, "delete_prefix", statuses_then_delete)
    streams = {job_id: _subscribed(job_id) for job_id in (running.id, queued.id)}
    run_job(erase_id, erase_user)
    assert at_delete == {"train_likeness": "canceled", "generate_portraits": "canceled"}
    for pubsub in streams.values():  # a page following the job hears how it ended, then the stream ends
        heard = _next_message(pubsub, 5)
        assert heard is not None and (heard["status"], heard["stage"]) == ("canceled", "account deleted")
    assert _rows(uid) == 0 and storage.list_keys(storage.user_prefix(uid)) == []
