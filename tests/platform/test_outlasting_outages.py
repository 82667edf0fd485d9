"""Nothing lost when a dependency hiccups (issue #22, items 1-3), on the running platform with the
servers hung by SIGSTOP (tests/platform/test_outages.py `frozen`):

- S3 hung for 30 s: a photo check under way and an account erasure both finish once it is back
  (their failed attempts waited and were given back: no attempt spent), a photo deleted meanwhile
  gets 202 with a sentence and its files go once S3 answers, the erasure shows as pending (login
  says so, GET /v1/me has `erasing_since`) and ends with the goodbye mail.
- Postgres paused for 20 s: a running check loses no attempt and is not left to the reaper.
- An erasure whose job failed anyway is finished by the scheduler."""

import time
import uuid

from sqlalchemy import func, select, text, update

from shared import storage
from shared.db import session_scope
from shared.models import Job, JobStatus, Likeness, User
from tests.conftest import Api, Platform, UserSession, wait_until
from tests.notifier.test_notify_worker import mails_to
from tests.platform.test_outages import ANSWER_WITHIN, _check_running, _files, _photos_checked, _timed, frozen

TABLES = (
    "users",
    "photos",
    "pose_photos",
    "jobs",
    "likenesses",
    "portraits",
    "refresh_tokens",
    "email_tokens",
)
GOODBYE = "Your data was deleted"


def _rows(uid: uuid.UUID) -> int:
    with session_scope() as session:
        return sum(
            session.execute(
                text(f"SELECT count(*) FROM {t} WHERE {'id' if t == 'users' else 'user_id'} = :u"), {"u": uid}
            ).scalar()
            for t in TABLES
        )


def _verified_user_with_photos(api: Api, n: int) -> tuple[UserSession, uuid.UUID, list[str]]:
    user = api.new_user()
    uid = uuid.UUID(api.get("/v1/me", headers=user.auth).json()["id"])
    with session_scope() as session:  # the goodbye mail goes to confirmed addresses
        session.execute(update(User).where(User.id == uid).values(email_verified_at=func.now()))
    body = api.post("/v1/photos", files=_files(n), headers=user.auth).json()
    assert api.wait_job(body["job"]["id"], user)["status"] == "succeeded"
    return user, uid, [p["id"] for p in body["photos"]]


def test_a_storage_hang_fails_no_check_and_no_erasure_and_deletes_finish_after(api: Api, platform: Platform):
    leaving, leaving_id, _ = _verified_user_with_photos(api, 2)
    deleting, deleting_id, [photo_id, _] = _verified_user_with_photos(api, 2)
    with session_scope() as session:  # a likeness with a file, to delete while S3 hangs
        likeness = Likeness(
            user_id=deleting_id, status="failed", class_word="woman", trigger_word="ohwx", base_model="b"
        )
        session.add(likeness)
        session.flush()
        likeness_id = likeness.id
    folder = storage.user_key(deleting_id, "likenesses", str(likeness_id))
    storage.put_bytes(f"{folder}/pytorch_lora_weights.safetensors", b"weights", "application/octet-stream")
    photo_keys = [k for k in storage.list_keys(storage.user_prefix(deleting_id)) if photo_id in k]
    assert photo_keys

    checker, checker_id, job_id = _check_running(api, 12)
    with frozen(platform.stack, "s3"):
        hung_at = time.monotonic()
        assert api.delete("/v1/me", headers=leaving.auth).status_code == 202  # needs no storage
        login = api.post("/v1/auth/login", json={"email": leaving.email, "password": leaving.password})
        assert login.status_code == 403, login.text
        assert login.json()["detail"].startswith("This account is being erased (asked for at ")
        me = api.get("/v1/me", headers=leaving.auth)  # the token issued before still reads the account
        assert me.status_code == 200 and me.json()["erasing_since"] is not None, me.text
        assert api.get("/v1/photos", headers=leaving.auth).status_code == 401  # nothing else

        r, took = _timed(lambda: api.delete(f"/v1/photos/{photo_id}", headers=deleting.auth))
        assert r.status_code == 202 and took < ANSWER_WITHIN, (r.status_code, took, r.text)
        assert r.json()["detail"].startswith("Deleted. Storage is not answering right now")
        assert api.delete(f"/v1/photos/{photo_id}", headers=deleting.auth).status_code == 404  # it is gone
        r = api.delete(f"/v1/likenesses/{likeness_id}", headers=deleting.auth)
        assert r.status_code == 202, r.text
        time.sleep(max(0.0, 30 - (time.monotonic() - hung_at)))  # 30 s: old code spent every attempt
        assert [j.status for j in _jobs(leaving_id, "erase_user")] in (["queued"], ["running"])

    job = api.wait_job(job_id, checker, timeout=120)
    assert job["status"] == "succeeded" and job["attempts"] == 1, job  # its failed attempts given back
    assert job["result"] == {"accepted": 12, "rejected": 0}
    assert sorted(_photos_checked(checker_id)) == ["accepted"] * 12

    wait_until(lambda: _rows(leaving_id) == 0, timeout=120, what="the erased account's rows gone")
    assert storage.list_keys(storage.user_prefix(leaving_id)) == []
    wait_until(
        lambda: [m for m in mails_to(platform, leaving.email) if m["Subject"] == GOODBYE],
        timeout=60,
        what="the goodbye mail",
    )
    wait_until(
        lambda: not any(storage.exists(k) for k in photo_keys) and not storage.list_keys(folder),
        timeout=60,
        what="the deleted photo's and likeness's files gone",
    )
    assert api.get(f"/v1/photos/{photo_id}", headers=deleting.auth).status_code == 404


def _jobs(uid: uuid.UUID, kind: str) -> list[Job]:
    with session_scope() as session:
        jobs = session.scalars(select(Job).where(Job.user_id == uid, Job.kind == kind)).all()
        session.expunge_all()
        return list(jobs)


def test_a_database_pause_costs_a_running_job_no_attempt(api: Api, platform: Platform):
    user, user_id, job_id = _check_running(api, 12)
    with frozen(platform.stack, "postgres"):
        time.sleep(20)
    back = time.monotonic()
    job = api.wait_job(job_id, user, timeout=120)
    took = time.monotonic() - back
    assert job["status"] == "succeeded" and job["attempts"] == 1, job  # not reaped as worker_lost
    assert job["result"] == {"accepted": 12, "rejected": 0}
    assert took < 30, f"finished {took:.1f} s after the database came back"
    print(f"photo check finished {took:.1f} s after a 20 s database pause")


def test_an_erasure_whose_job_failed_is_finished_by_the_scheduler(api: Api, platform: Platform):
    user, uid, _ = _verified_user_with_photos(api, 1)
    with session_scope() as session:  # what old code left: marked deleting, the erase job failed
        session.execute(update(User).where(User.id == uid).values(deleting=True, deleting_since=func.now()))
        session.add(
            Job(
                kind="erase_user",
                user_id=uid,
                status=JobStatus.failed,
                attempts=10,
                max_attempts=10,
                input={},
                idempotency_key=f"erase:{uid}",
                error_code="internal_error",
            )
        )
    wait_until(lambda: _rows(uid) == 0, timeout=60, what="the account erased")
    assert storage.list_keys(storage.user_prefix(uid)) == []
    wait_until(
        lambda: [m for m in mails_to(platform, user.email) if m["Subject"] == GOODBYE],
        timeout=60,
        what="the goodbye mail",
    )
