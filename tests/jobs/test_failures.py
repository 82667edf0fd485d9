"""The job system under failure: killed workers, a relay down between commit and publish, duplicate
requests and deliveries, and a poison task."""

import os
import signal
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import select

from shared import storage
from shared.db import session_scope
from shared.identity import lock_photo_set
from shared.jobs import runner
from shared.jobs.celery_app import celery_app
from shared.localstack import free_port
from shared.models import Job, JobStatus, OutboxMessage, Photo
from tests.conftest import Api, Platform, wait_until
from tests.pictures import astronaut_variants, jpeg


def _job_row(job_id: str) -> Job:
    with session_scope() as session:
        job = session.get(Job, uuid.UUID(job_id))
        session.expunge(job)
        return job


def _upload(api: Api, user, n: int, **headers: str) -> dict:
    files = [
        ("files", (f"me{i}.jpg", jpeg(img), "image/jpeg")) for i, img in enumerate(astronaut_variants(n))
    ]
    r = api.post("/v1/photos", files=files, headers={**user.auth, **headers})
    assert r.status_code == 201, r.text
    return r.json()


def _replace(platform: Platform, name: str) -> None:
    """Kill the platform's process `name` (whole process group) and start a fresh one."""
    procs = platform.procs
    victim = next(p for p in procs.running if name in p.log_path and p.poll() is None)
    procs.kill(victim)
    procs.running.remove(victim)
    if name == "worker-photos":
        procs.worker("photos")
    else:
        procs.start(name, name)


def test_sigkilled_worker_mid_task_the_job_still_ends_exactly_once(api: Api, platform: Platform):
    user = api.new_user()
    body = _upload(api, user, 16)
    job_id = body["job"]["id"]
    wait_until(
        lambda: (j := _job_row(job_id)).status == "running" and 0 < j.progress < 0.8,
        timeout=60,
        interval=0.05,
        what="the check to be half-way",
    )
    _replace(platform, "worker-photos")  # SIGKILL the worker and its pool mid-task

    job = api.wait_job(job_id, user, timeout=90)
    assert job["status"] == "succeeded", job
    assert job["attempts"] == 2  # the reaper handed it to the new worker once
    assert job["result"] == {"accepted": 16, "rejected": 0}
    finished = job["finished_at"]
    time.sleep(11)  # longer than the stale timeout: nothing runs it again
    again = api.get(f"/v1/jobs/{job_id}", headers=user.auth).json()
    assert again["status"] == "succeeded" and again["finished_at"] == finished
    assert again["attempts"] == 2


def test_sigkilled_pool_process_the_redelivered_task_takes_the_job_over(api: Api, platform: Platform) -> None:
    """Only the pool process dies: Celery re-queues the task at once, and the copy takes the job over
    once its heartbeat is 2 beats old, well before the reaper's stale timeout."""
    procs = platform.procs
    for name in ("worker-photos", "scheduler"):  # no reaper, and only the worker under test
        victim = next(p for p in procs.running if name in p.log_path and p.poll() is None)
        procs.kill(victim)
        procs.running.remove(victim)
    mine = None
    try:
        mine = procs.worker("photos", JOB_HEARTBEAT_SECONDS="5")  # the production heartbeat
        user = api.new_user()
        job_id = _upload(api, user, 16)["job"]["id"]
        running = wait_until(
            lambda: (j := _job_row(job_id)).status == "running" and 0 < j.progress < 0.8 and j,
            timeout=90,
            interval=0.05,
            what="the check to be half-way",
        )
        pool_pid = int(running.worker.split(":")[1])  # host:pid:nonce of the pool process
        os.kill(pool_pid, signal.SIGKILL)
        killed = time.monotonic()
        wait_until(
            lambda: (j := _job_row(job_id)).attempts == 2 and j.worker != running.worker,
            timeout=15,
            interval=0.1,
            what="the redelivered task to take the job over",
        )
        taken_over = time.monotonic() - killed
        print(f"taken over {taken_over:.1f} s after the SIGKILL")
        job = api.wait_job(job_id, user, timeout=90)
        assert job["status"] == "succeeded" and job["attempts"] == 2, job
        assert job["result"] == {"accepted": 16, "rejected": 0}
        assert taken_over < 15
        time.sleep(3)
        again = api.get(f"/v1/jobs/{job_id}", headers=user.auth).json()
        assert again["attempts"] == 2 and again["finished_at"] == job["finished_at"]
    finally:
        if mine is not None:
            procs.kill(mine)
            procs.running.remove(mine)
        procs.start("scheduler", "scheduler")
        procs.worker("photos")


def test_relay_down_between_commit_and_publish_the_outbox_delivers(api: Api, platform: Platform):
    victim = next(p for p in platform.procs.running if "relay" in p.log_path and p.poll() is None)
    platform.procs.kill(victim)  # the process that publishes is gone
    platform.procs.running.remove(victim)
    user = api.new_user()
    job_id = _upload(api, user, 1)["job"]["id"]
    time.sleep(2)
    with session_scope() as session:
        assert session.get(Job, uuid.UUID(job_id)).status == "queued"
        row = session.scalar(select(OutboxMessage).where(OutboxMessage.job_id == uuid.UUID(job_id)))
        assert row.sent_at is None  # committed with the job, not yet published
    platform.procs.start("relay", "relay")
    assert api.wait_job(job_id, user, timeout=60)["status"] == "succeeded"


def test_duplicate_idempotency_key_returns_the_same_job(api: Api):
    user = api.new_user()
    first = _upload(api, user, 2, **{"Idempotency-Key": "upload-1"})
    second = _upload(api, user, 2, **{"Idempotency-Key": "upload-1"})
    assert second["job"]["id"] == first["job"]["id"]
    assert [p["id"] for p in second["photos"]] == [p["id"] for p in first["photos"]]
    assert (
        len(storage.list_keys(storage.user_prefix(api.get("/v1/me", headers=user.auth).json()["id"]))) == 2
    )  # nothing stored twice

    other = [("files", ("x.jpg", jpeg(astronaut_variants(3)[2]), "image/jpeg"))]
    r = api.post("/v1/photos", files=other, headers={**user.auth, "Idempotency-Key": "upload-1"})
    assert r.status_code == 409 and "Idempotency-Key" in r.json()["detail"]


def _worker_logs(procs, queue: str) -> str:
    """Everything the `queue` workers of `procs` have logged so far (Celery's and the runner's lines)."""
    return "".join(
        open(p.log_path, encoding="utf-8", errors="replace").read()  # noqa: SIM115
        for p in procs.running
        if f"worker-{queue}" in p.log_path
    )


def _consumed(procs, task_id: str, job_id: str) -> bool:
    """A worker received the message `task_id`, its claim found the job not queued, and it acked."""
    logs = _worker_logs(procs, "photos")
    return (
        f"[{task_id}] received" in logs
        and f"job {job_id} is not queued" in logs
        and f"[{task_id}] succeeded" in logs
    )


def test_duplicate_delivery_does_no_work_twice(api: Api, platform: Platform):
    user = api.new_user()
    job_id = _upload(api, user, 1)["job"]["id"]
    done = api.wait_job(job_id, user)
    duplicate = celery_app.send_task("photos.check", kwargs={"job_id": job_id}, queue="photos")
    wait_until(
        lambda: _consumed(platform.procs, duplicate.id, job_id), timeout=30, what="the duplicate consumed"
    )
    after = api.get(f"/v1/jobs/{job_id}", headers=user.auth).json()
    assert after["attempts"] == done["attempts"] == 1
    assert after["finished_at"] == done["finished_at"]


def test_duplicate_delivered_while_the_job_runs_is_a_no_op(api: Api, platform: Platform):
    """A copy of a running job's task is consumed as a no-op: its take-over waits 2 heartbeats,
    sees the owner's heartbeat move, and leaves the job to its owner (one attempt).

    Both workers run the product's heartbeat (2 s), not the suite's 0.5 s: a take-over window of
    1 s is shorter than the gap a live owner's heartbeat thread leaves on a loaded machine (each
    face check holds the GIL ~0.2-0.4 s here), and a copy then rightly took a live job over. The
    owner is held on the user's row lock (as a deletion would hold it) until the copy is consumed,
    so it is consumed while the job runs however fast or slow the check is."""
    procs = platform.procs
    platform_worker = next(p for p in procs.running if "worker-photos" in p.log_path and p.poll() is None)
    procs.kill(platform_worker)
    procs.running.remove(platform_worker)
    mine = [procs.worker("photos", JOB_HEARTBEAT_SECONDS="2") for _ in range(2)]  # one idle for the copy
    try:
        user = api.new_user()
        user_id = uuid.UUID(api.get("/v1/me", headers=user.auth).json()["id"])
        job_id = _upload(api, user, 16)["job"]["id"]
        wait_until(lambda: _job_row(job_id).status == "running", timeout=60, interval=0.05, what="running")
        with session_scope() as holder:  # the owner stops at its next photo until this commits
            lock_photo_set(holder, user_id)
            duplicate = celery_app.send_task("photos.check", kwargs={"job_id": job_id}, queue="photos")
            wait_until(
                lambda: _consumed(procs, duplicate.id, job_id),
                timeout=60,
                interval=0.05,
                what="the duplicate consumed",
            )
            assert _job_row(job_id).status == "running"  # consumed while the first delivery works
        job = api.wait_job(job_id, user, timeout=90)
        assert job["status"] == "succeeded" and job["attempts"] == 1, job
        assert job["result"] == {"accepted": 16, "rejected": 0}
    finally:
        for worker in mine:
            procs.kill(worker, signal.SIGTERM)
            procs.running.remove(worker)
        procs.worker("photos")


def test_poison_task_fails_after_max_attempts(api: Api, platform: Platform):
    victim = next(p for p in platform.procs.running if "relay" in p.log_path and p.poll() is None)
    platform.procs.kill(victim)
    platform.procs.running.remove(victim)
    user = api.new_user()
    body = _upload(api, user, 1)
    with session_scope() as session:  # the photo's object vanishes: every attempt crashes
        photo = session.get(Photo, uuid.UUID(body["photos"][0]["id"]))
        storage.delete_keys([photo.object_key])
    platform.procs.start("relay", "relay")
    job = api.wait_job(body["job"]["id"], user, timeout=90)
    assert job["status"] == "failed"
    assert job["attempts"] == job["max_attempts"] == 3
    assert job["error_code"] == "internal_error"
    assert "failed 3 times" in job["error_message"]
    time.sleep(3)
    assert api.get(f"/v1/jobs/{job['id']}", headers=user.auth).json()["attempts"] == 3


def test_cancel_a_queued_job(api: Api, platform: Platform):
    victim = next(p for p in platform.procs.running if "relay" in p.log_path and p.poll() is None)
    platform.procs.kill(victim)
    platform.procs.running.remove(victim)
    user = api.new_user()
    job_id = _upload(api, user, 1)["job"]["id"]
    r = api.post(f"/v1/jobs/{job_id}/cancel", headers=user.auth)
    assert r.status_code == 200 and r.json()["status"] == "canceled"
    platform.procs.start("relay", "relay")

    def delivered_and_consumed() -> bool:  # the message is delivered, but the claim finds a canceled job
        with session_scope() as session:
            row = session.scalar(select(OutboxMessage).where(OutboxMessage.job_id == uuid.UUID(job_id)))
            sent = row.sent_at is not None
        return sent and f"job {job_id} is not queued" in _worker_logs(platform.procs, "photos")

    wait_until(delivered_and_consumed, timeout=30, what="the canceled job's message consumed")
    job = api.get(f"/v1/jobs/{job_id}", headers=user.auth).json()
    assert job["status"] == "canceled" and job["attempts"] == 0
    assert api.post(f"/v1/jobs/{job_id}/cancel", headers=user.auth).status_code == 409


def test_parallel_retries_with_one_idempotency_key_get_the_first_answer(api: Api):
    """Retries sent while the first upload is still in flight (photos and poses): every one is
    answered 201 with the same rows and job, as POST /v1/likenesses does; nothing is stored twice."""
    user = api.new_user()
    photos = [
        ("files", (f"me{i}.jpg", jpeg(img), "image/jpeg")) for i, img in enumerate(astronaut_variants(2))
    ]
    pose = {"file": ("pose.jpg", jpeg(astronaut_variants(3)[2]), "image/jpeg")}
    for path, files, key in [("/v1/photos", photos, "par-photos"), ("/v1/poses", pose, "par-pose")]:
        headers = {**user.auth, "Idempotency-Key": key}
        with ThreadPoolExecutor(4) as pool:
            answers = list(
                pool.map(lambda _, p=path, f=files, h=headers: api.post(p, files=f, headers=h), range(4))
            )
        assert [r.status_code for r in answers] == [201] * 4, [r.text for r in answers]
        bodies = [r.json() for r in answers]
        assert len({b["job"]["id"] for b in bodies}) == 1, bodies
        rows = {str([p["id"] for p in b["photos"]]) if "photos" in b else b["pose"]["id"] for b in bodies}
        assert len(rows) == 1, bodies
    user_id = api.get("/v1/me", headers=user.auth).json()["id"]
    assert len(api.get("/v1/photos", headers=user.auth).json()["photos"]) == 2
    assert len(api.get("/v1/poses", headers=user.auth).json()["poses"]) == 1
    assert len(storage.list_keys(storage.user_prefix(user_id))) >= 3  # 2 photos + 1 pose, no extra
    assert len([k for k in storage.list_keys(storage.user_prefix(user_id)) if "/photos/" in k]) == 2


def test_a_jobs_last_error_names_no_endpoint_bucket_user_or_object_key(api: Api) -> None:
    """`result.last_error` held the exception's text: botocore's names the in-cluster S3 endpoint, the
    bucket and the object key with the user's id. The API shows a code; the details stay in the log."""
    user = api.new_user()
    uid = uuid.UUID(api.get("/v1/me", headers=user.auth).json()["id"])
    key = storage.user_key(uid, "photos", f"{uuid.uuid4()}.jpg")
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens: an S3 that is not there

    def handler(ctx: runner.JobContext) -> dict:
        # Not an outage (S3 unreachable is waited out, shared/jobs/outage.py): a failure whose text
        # names what botocore's would, so the attempt fails and shows what it keeps.
        raise ValueError(f'Could not read "{endpoint}/{storage.bucket()}/{key}"')

    secret = [endpoint.removeprefix("http://"), storage.bucket(), str(uid), key]
    with session_scope() as session:  # one attempt: no retry is published to a running worker
        job = Job(
            kind="photo_check", status=JobStatus.queued, user_id=uid, input={"photo_ids": []}, max_attempts=1
        )
        session.add(job)
        session.flush()
        job_id = job.id
    runner.run_job(job_id, handler)
    shown = api.get(f"/v1/jobs/{job_id}", headers=user.auth)
    assert shown.status_code == 200 and shown.json()["status"] == "failed", shown.text
    assert shown.json()["result"]["last_error"] == "ValueError", shown.text
    assert not [s for s in secret if s in shown.text], shown.text

    # A row stored before this (the whole text in last_error) is shown with its code only.
    with session_scope() as session:
        old = Job(
            kind="photo_check",
            status=JobStatus.failed,
            user_id=uid,
            input={},
            error_code="internal_error",
            error_message="This job failed 3 times in a row, so we stopped trying.",
            result={"last_error": f'EndpointConnectionError: Could not connect to "{endpoint}/{key}"'},
        )
        session.add(old)
        session.flush()
        old_id = old.id
    shown = api.get(f"/v1/jobs/{old_id}", headers=user.auth)
    assert shown.json()["result"] == {"last_error": "EndpointConnectionError"}, shown.text
