"""Erasure and deletes when S3 answers a multi-object delete 200 but lists keys it did not delete.

AWS S3 (and S3-compatible stores under load) never fail DeleteObjects as a whole for per-key problems:
the answer is 200 with the keys it could not delete under `Errors` (InternalError, SlowDown ...).
Every path that forgets keys after a delete (the erasure, a deleted photo's condemned keys, the
scheduler's clean-up) must keep them until S3 has really deleted them.

In-process, on the real stack (Postgres, Redis, SeaweedFS behind tests/s3_faults.FaultyS3)."""

import os
import uuid

import pytest
from sqlalchemy import func, select

from services.photos.erasure import erase_user
from shared import pending_objects, storage
from shared.db import session_scope
from shared.jobs import run_job
from shared.models import Job, JobStatus, PendingObject, User
from tests.conftest import wait_until
from tests.s3_faults import FaultyS3, storage_through


def _user_with_objects(n: int = 3) -> tuple[uuid.UUID, list[str]]:
    uid = uuid.uuid4()
    with session_scope() as session:
        user = User(id=uid, email=f"{uid.hex}@example.com", password_hash="x", face_consent_at=func.now())
        session.add(user)
    keys = [storage.user_key(uid, "photos", f"{uuid.uuid4()}.jpg") for _ in range(n)]
    for key in keys:
        storage.put_bytes(key, b"\xff\xd8 a face photo", "image/jpeg")
    return uid, keys


def _listed(key: str) -> int:
    with session_scope() as session:
        count = select(func.count()).select_from(PendingObject).where(PendingObject.key == key)
        return session.scalar(count) or 0


def _forget(keys: list[str]) -> None:
    storage.delete_keys(keys)
    with session_scope() as session:
        pending_objects.settle(session, keys)


def test_delete_keys_raises_a_store_failure_for_the_keys_s3_did_not_delete(stack) -> None:
    storage.ensure_bucket()
    _, keys = _user_with_objects(2)
    with FaultyS3(os.environ["S3_ENDPOINT_URL"]) as s3, storage_through(s3.url):
        with s3.failing_deletes("SlowDown"), pytest.raises(storage.DeleteIncomplete) as failed:
            storage.delete_keys(keys)
        assert failed.value.failed == dict.fromkeys(keys, "SlowDown")
        assert storage.store_failed(failed.value)  # retried later, no attempt spent
        with s3.failing_deletes("AccessDenied"), pytest.raises(storage.DeleteIncomplete) as refused:
            storage.delete_keys(keys)
        assert not storage.store_failed(refused.value)  # refused, not failing: raised as an error
        storage.delete_keys(keys)  # S3 well again
    assert not any(storage.exists(k) for k in keys)


def test_an_erasure_whose_deletes_s3_reported_failed_waits_and_then_completes(stack) -> None:
    """The erasure keeps the account (`deleting`) and its job, without spending an attempt, until S3
    really deleted every object; then it erases the row. (When the suite's platform runs, its photos
    worker may take the retry, through S3 that works: the account is erased then too.)"""
    storage.ensure_bucket()
    uid, keys = _user_with_objects(3)
    with session_scope() as session:
        user = session.get(User, uid)
        user.deleting, user.deleting_since = True, func.now()
        job = Job(kind="erase_user", user_id=uid, status=JobStatus.queued, input={}, max_attempts=10)
        session.add(job)  # no outbox row: this process runs the first attempt
        session.flush()
        job_id = job.id
    with FaultyS3(os.environ["S3_ENDPOINT_URL"]) as s3, storage_through(s3.url), s3.failing_deletes():
        run_job(job_id, erase_user)
        assert s3.deletes_refused == 3
    with session_scope() as session:
        erased = session.get(User, uid) is None
        job_row = session.get(Job, job_id)
        assert erased or (job_row is not None and job_row.status is not JobStatus.failed)
    left = storage.list_keys(storage.user_prefix(uid))
    assert not (erased and left), f"the account was erased while S3 kept {len(left)} of its photos"
    run_job(job_id, erase_user)  # the retry, S3 well again (nothing to do if a worker took it)

    def gone() -> bool:
        with session_scope() as session:
            return session.get(User, uid) is None

    wait_until(gone, timeout=60, what="the erasure's end")
    assert storage.list_keys(storage.user_prefix(uid)) == []


def test_a_deleted_photos_key_stays_listed_while_s3_reports_it_undeleted(stack) -> None:
    """`pending_objects.delete_now`, as DELETE /v1/photos/{id} calls it after condemning the key: a
    key S3 did not delete stays listed (the API answers 202 and the clean-up retries), and is
    forgotten once deleted. (Announced, not condemned: the platform's scheduler, when the suite runs
    one, deletes condemned keys through S3 that works and would race this test.)"""
    storage.ensure_bucket()
    _, [key] = _user_with_objects(1)
    pending_objects.announce([key])
    try:
        with (
            FaultyS3(os.environ["S3_ENDPOINT_URL"]) as s3,
            storage_through(s3.url),
            s3.failing_deletes("SlowDown"),
        ):
            assert pending_objects.delete_now([key]) is False
        assert storage.exists(key) and _listed(key) == 1
        assert pending_objects.delete_now([key]) is True
        assert not storage.exists(key) and _listed(key) == 0
    finally:
        _forget([key])


def test_the_clean_up_keeps_keys_s3_reported_undeleted_for_its_next_run(stack) -> None:
    """`pending_objects.sweep` (the scheduler's clean-up) forgets a key only once S3 deleted it; a
    key S3 answered with a per-key error stays listed, dated now (tried again after the grace)."""
    storage.ensure_bucket()
    _, [key] = _user_with_objects(1)
    pending_objects.announce([key])  # due for a sweep with no grace, not for the platform's (1 h)
    try:
        with FaultyS3(os.environ["S3_ENDPOINT_URL"]) as s3, storage_through(s3.url), s3.failing_deletes():
            pending_objects.sweep(grace_seconds=0)
            assert s3.deletes_refused >= 1
        assert storage.exists(key) and _listed(key) == 1
        pending_objects.sweep(grace_seconds=0)
        assert not storage.exists(key) and _listed(key) == 0
    finally:
        _forget([key])


def test_a_key_s3_keeps_refusing_holds_up_no_other_delete(stack) -> None:
    """One key S3 refuses for good (AccessDenied: an object lock, a legal hold) must not stop the
    clean-up, the deletes of other rows or the retention of other photos: the clean-up forgets the
    keys S3 deleted in the same batch and keeps the refused one; `delete_now` settles the deleted
    ones and answers False (202: the rest is deleted later)."""
    storage.ensure_bucket()
    _, keys = _user_with_objects(3)
    refused = keys[0]
    only = refused.rsplit("/", 1)[1]
    pending_objects.announce(keys)
    try:
        with (
            FaultyS3(os.environ["S3_ENDPOINT_URL"]) as s3,
            storage_through(s3.url),
            s3.failing_deletes("AccessDenied", only=only),
        ):
            pending_objects.sweep(grace_seconds=0)
        assert [_listed(k) for k in keys] == [1, 0, 0]
        # Condemned again, as a deleted row's keys are. Condemned keys are due at once, and the
        # session-wide scheduler's clean-up (every 10 s, straight to S3, no fault) would delete the
        # refused one behind the test's back: its condemnation stays in a transaction open until
        # the end (its sweep skips the locked row; delete_now reads no rows).
        with session_scope() as guard:
            pending_objects.condemn(guard, [refused])
            with session_scope() as session:
                pending_objects.condemn(session, keys[1:])
            with (
                FaultyS3(os.environ["S3_ENDPOINT_URL"]) as s3,
                storage_through(s3.url),
                s3.failing_deletes("AccessDenied", only=only),
            ):
                assert pending_objects.delete_now(keys) is False
            assert [_listed(k) for k in keys] == [1, 0, 0]
    finally:
        _forget(keys)


def test_retention_deletes_the_rows_whose_files_s3_deleted(stack) -> None:
    """The retention sweep (photos past PHOTO_RETENTION_DAYS) deletes each expired photo's row with
    its file; a file S3 did not delete keeps its row for the next hour's sweep, and no other."""
    from datetime import UTC, datetime, timedelta

    from services.photos.retention import sweep_expired_photos
    from shared.models import Photo

    storage.ensure_bucket()
    uid, keys = _user_with_objects(2)
    old = datetime.now(UTC) - timedelta(days=400)
    with session_scope() as session:
        for key in keys:
            session.add(Photo(id=uuid.UUID(key.rsplit("/", 1)[1][:-4]), user_id=uid, object_key=key,
                              content_type="image/jpeg", width=1, height=1, size_bytes=1,
                              sha256=key[-64:].rjust(64, "0"), created_at=old))  # fmt: skip
    only = keys[0].rsplit("/", 1)[1]
    with (
        FaultyS3(os.environ["S3_ENDPOINT_URL"]) as s3,
        storage_through(s3.url),
        s3.failing_deletes("SlowDown", only=only),
    ):
        sweep_expired_photos()
    with session_scope() as session:
        left = set(session.scalars(select(Photo.object_key).where(Photo.user_id == uid)))
    assert left == {keys[0]}
    sweep_expired_photos()
    with session_scope() as session:
        assert session.scalars(select(Photo.object_key).where(Photo.user_id == uid)).all() == []
