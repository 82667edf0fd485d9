"""Retries wait (issue #22, item 3): a failed attempt's outbox row is due only after its kind's
backoff (exponential, jittered), and the relay publishes only due rows; an attempt that failed
because a dependency was down is given back while the outage is younger than the window; a photo
check that fails for good rejects its photos (never `checking` forever), and they can be uploaded
again. Real Postgres; the relay test and the last one run on the platform (gateway, relay, photos
worker)."""

import statistics
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from shared import storage
from shared.config import get_settings
from shared.contracts import CheckPhotos
from shared.db import session_scope
from shared.jobs import enqueue
from shared.jobs.outbox import relay_once
from shared.jobs.retry import backoff, retry_or_fail
from shared.jobs.state import now
from shared.models import Job, JobStatus, OutboxMessage, Photo
from tests.conftest import Api, Platform
from tests.pictures import astronaut_variants, jpeg


def _running(kind: str, attempts: int = 1, max_attempts: int = 3) -> uuid.UUID:
    with session_scope() as session:
        job = Job(
            kind=kind,
            status=JobStatus.running,
            input={},
            worker="w",
            attempts=attempts,
            max_attempts=max_attempts,
            heartbeat_at=now(),
        )
        session.add(job)
        session.flush()
        return job.id


def _fail(job_id: uuid.UUID, outage: str | None = None) -> Job:
    with session_scope() as session:
        job = session.get(Job, job_id)
        moved = retry_or_fail(
            session,
            job,
            claimed_by="w",
            code="internal_error",
            retry_message="r",
            final_message="f",
            outage=outage,
        )
        assert moved is not None
        session.expunge(moved)
        return moved


def _outbox(job_id: uuid.UUID) -> list[OutboxMessage]:
    with session_scope() as session:
        rows = session.scalars(select(OutboxMessage).where(OutboxMessage.job_id == job_id)).all()
        session.expunge_all()
        return list(rows)


def test_backoff_grows_per_kind_with_jitter(stack) -> None:
    scale = get_settings().job_retry_scale
    for kind, base, cap in (("photo_check", 2, 60), ("train_likeness", 10, 300)):
        for failures in (1, 2, 3, 10):
            step = min(cap, base * 2 ** (failures - 1)) * scale
            waits = [backoff(kind, failures) for _ in range(200)]
            assert all(step / 2 <= w <= step for w in waits), (kind, failures, min(waits), max(waits))
            assert statistics.pstdev(waits) > step / 20  # jittered: not one value for every job
    # During an outage the wait follows how long it has lasted, within the kind's base and cap.
    assert 30 * scale <= backoff("photo_check", 1, outage_seconds=60) <= 60 * scale
    assert backoff("photo_check", 1, outage_seconds=10_000) <= 60 * scale


@pytest.fixture
def no_other_relay(platform: Platform) -> Iterator[None]:
    """The platform's relay stopped for the test, started again after: this test drives the relay
    itself, and the platform's (polling every 0.1 s) published the row the moment it was due, so
    the test's own pass found nothing (2 of 40 runs here, once the platform was up)."""
    procs = platform.procs
    relay = next(p for p in procs.running if "relay" in p.log_path and p.poll() is None)
    procs.kill(relay)
    procs.running.remove(relay)
    try:
        yield
    finally:
        procs.start("relay", "relay")


def test_a_failed_attempt_is_published_only_after_its_backoff(no_other_relay: None) -> None:
    job_id = _running("train_likeness")
    before = now()
    job = _fail(job_id)
    assert job.status is JobStatus.queued and job.stage == "retrying"
    [row] = _outbox(job_id)
    scale = get_settings().job_retry_scale
    assert row.available_at is not None
    assert before + timedelta(seconds=5 * scale) <= row.available_at <= now() + timedelta(seconds=10 * scale)

    published: list[dict] = []
    with session_scope() as session:  # not due yet: the relay leaves it
        relay_once(session, lambda task, queue, payload: published.append(payload))
    assert {"job_id": str(job_id)} not in published
    with session_scope() as session:  # due: published once
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == row.id)
            .values(available_at=now() - timedelta(seconds=1))
        )
    with session_scope() as session:
        relay_once(session, lambda task, queue, payload: published.append(payload))
    assert published.count({"job_id": str(job_id)}) == 1


def test_an_outage_gives_the_attempt_back_until_the_window_closes(stack) -> None:
    job_id = _running("photo_check", attempts=3, max_attempts=3)  # its last attempt
    job = _fail(job_id, outage="storage")
    assert job.status is JobStatus.queued and job.attempts == 2  # given back: not the job's fault
    assert job.outage_since is not None and job.error_message.startswith("Storage is not answering")
    assert (job.stage, job.error_code) == ("waiting for storage", "storage_unavailable")
    assert _outbox(job_id)[0].available_at is not None
    with session_scope() as session:  # attempt 3 again, the outage now older than the window
        window = timedelta(seconds=get_settings().job_outage_window_seconds + 1)
        session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(status=JobStatus.running, attempts=3, outage_since=now() - window)
        )
    job = _fail(job_id, outage="storage")
    assert job.status is JobStatus.failed and job.error_message == "f"
    # A bug (no outage) counts: attempt 1 of 3 is retried, not given back.
    other = _fail(_running("photo_check", attempts=1))
    assert other.status is JobStatus.queued and other.attempts == 1 and other.outage_since is None


def test_a_photo_check_that_fails_for_good_rejects_its_photos_and_they_can_be_uploaded_again(
    api: Api, platform: Platform
) -> None:
    image = jpeg(astronaut_variants(1)[0])
    files = [("files", ("me.jpg", image, "image/jpeg"))]
    first = api.new_user()  # learns the picture's cleaned sha256 and size through a real upload
    body = api.post("/v1/photos", files=files, headers=first.auth).json()
    with session_scope() as session:
        model = session.get(Photo, uuid.UUID(body["photos"][0]["id"]))
        columns = {c: getattr(model, c) for c in ("content_type", "width", "height", "size_bytes", "sha256")}

    user = api.new_user()
    uid = uuid.UUID(api.get("/v1/me", headers=user.auth).json()["id"])
    photo_id = uuid.uuid4()
    with session_scope() as session:  # its object is gone: every attempt of the check fails (404)
        session.add(
            Photo(
                id=photo_id,
                user_id=uid,
                object_key=storage.user_key(uid, "photos", f"{photo_id}.jpg"),
                **columns,
            )
        )
        session.flush()
        job_id = str(enqueue(session, CheckPhotos(photo_ids=[photo_id]), user_id=uid).id)
    job = api.wait_job(job_id, user, timeout=90)
    assert job["status"] == "failed" and job["attempts"] == 3, job
    photo = api.get(f"/v1/photos/{photo_id}", headers=user.auth).json()
    assert photo["status"] == "rejected" and photo["reason_code"] == "check_failed", photo
    assert photo["reason"] == "We could not check this photo; please upload it again."

    again = api.post("/v1/photos", files=files, headers=user.auth)  # the same picture: no duplicate
    assert again.status_code == 201, again.text
    assert again.json()["photos"][0]["reason_code"] is None
    done = api.wait_job(again.json()["job"]["id"], user, timeout=90)
    assert done["status"] == "succeeded" and done["result"] == {"accepted": 1, "rejected": 0}, done
