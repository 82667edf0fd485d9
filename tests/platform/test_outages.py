"""Postgres, Redis, S3 and SMTP hung (SIGSTOP ... SIGCONT) or restarted (killed, started again on the
same data and port) under the running platform: answers within their time bounds, nothing half-stored,
every job and mail exactly once after the server is back (issue #16)."""

import json
import mailbox
import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from email import message_from_bytes, policy

import httpx
import psutil
import pytest
from sqlalchemy import func, select, text

from shared import storage
from shared.contracts import TrainLikeness
from shared.db import session_scope
from shared.jobs import enqueue
from shared.localstack import LocalStack, free_port, wait_for_port
from shared.models import Job, Photo, PosePhoto
from tests.conftest import Api, Platform, Processes, UserSession, wait_until
from tests.pictures import astronaut, astronaut_variants, jpeg
from tests.s3_faults import FaultyS3

ANSWER_WITHIN = 3.0  # seconds: a request that needs a missing dependency
READY_WITHIN = 1.0  # seconds: /readyz naming it


# --- the servers ---------------------------------------------------------------------------------


def _server(stack: LocalStack, fragment: str) -> subprocess.Popen:
    return next(p for p in stack.processes if fragment in " ".join(map(str, p.args)))


def _pids(stack: LocalStack, name: str) -> list[int]:
    """The process and its children of one server: the postmaster and every backend for Postgres."""
    if name == "postgres":
        top = stack._pg.get_pid()  # type: ignore[union-attr]
    else:
        top = _server(stack, {"redis": "redis-server", "s3": "weed", "smtp": "aiosmtpd"}[name]).pid
    return [top, *(c.pid for c in psutil.Process(top).children(recursive=True))]


@contextmanager
def frozen(stack: LocalStack, name: str) -> Iterator[None]:
    """A hung server: the kernel still accepts connections and data, the process answers nothing."""
    pids = _pids(stack, name)
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


@contextmanager
def restarted(stack: LocalStack, name: str, sig: int = signal.SIGTERM) -> Iterator[None]:
    """Stop a server ("redis", "smtp") on entry; start it again on the same data and port on exit."""
    fragment, port = {"redis": ("redis-server", stack.redis_port), "smtp": ("aiosmtpd", stack.smtp_port)}[
        name
    ]
    old = _server(stack, fragment)
    os.killpg(old.pid, sig)
    old.wait(timeout=20)
    try:
        yield
    finally:
        log = open(stack.root / f"{name}-restarted.log", "ab")  # noqa: SIM115 - lives with the child
        new = subprocess.Popen(
            old.args, stdout=log, stderr=subprocess.STDOUT, cwd=stack.root, start_new_session=True
        )
        stack.processes[stack.processes.index(old)] = new
        wait_for_port(port, proc=new)


@contextmanager
def postgres_restarted(stack: LocalStack) -> Iterator[None]:
    """Crash Postgres (SIGQUIT to the postmaster: immediate shutdown) and start it on the same data."""
    pg = stack._pg
    pid = pg.get_pid()  # type: ignore[union-attr]
    os.kill(pid, signal.SIGQUIT)
    wait_until(lambda: not psutil.pid_exists(pid), timeout=20, what="the postmaster to exit")
    try:
        yield
    finally:
        pg.ensure_postgres_running()  # type: ignore[union-attr]


# --- helpers -------------------------------------------------------------------------------------


def _files(n: int) -> list:
    return [("files", (f"me{i}.jpg", jpeg(img), "image/jpeg")) for i, img in enumerate(astronaut_variants(n))]


def _timed(send) -> tuple[httpx.Response, float]:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    response = send()
    return response, time.monotonic() - started


def _assert_unavailable(r: httpx.Response, took: float, dependency: str, sentence: str) -> None:
    assert r.status_code == 503, r.text
    assert took < ANSWER_WITHIN, f"503 after {took:.2f}s"
    assert int(r.headers["Retry-After"]) > 0
    assert r.json() == {"detail": sentence, "dependency": dependency}


def _assert_not_ready(url: str, dependency: str) -> None:
    r, took = _timed(lambda: httpx.get(url, timeout=10))
    assert r.status_code == 503, r.text
    assert r.text.startswith(f"not ready: {dependency} is"), r.text
    assert took < READY_WITHIN, f"/readyz took {took:.2f}s"


def _user_id(api: Api, user: UserSession) -> uuid.UUID:
    return uuid.UUID(api.get("/v1/me", headers=user.auth).json()["id"])


def _rows(user_id: uuid.UUID) -> tuple[int, int]:
    """(photo rows, photo_check job rows) of a user."""
    with session_scope() as session:
        photos = session.scalar(select(func.count()).select_from(Photo).where(Photo.user_id == user_id))
        jobs = session.scalar(
            select(func.count()).select_from(Job).where(Job.user_id == user_id, Job.kind == "photo_check")
        )
    return photos, jobs


def _health_process(procs: Processes, *args: str) -> str:
    port = free_port()
    procs.start(args[0], *args, env={"HEALTH_PORT": str(port)})
    wait_for_port(port, timeout=60)
    url = f"http://127.0.0.1:{port}/readyz"
    wait_until(lambda: httpx.get(url, timeout=5).status_code == 200, timeout=60, what=f"{args} ready")
    return url


# --- a hung server -------------------------------------------------------------------------------


def test_storage_hung_upload_503_fast_nothing_half_stored(api: Api, platform: Platform, procs: Processes):
    user = api.new_user()
    user_id = _user_id(api, user)
    worker_ready = _health_process(procs, "worker", "photos")
    one = _files(1)  # made before the clock starts
    with frozen(platform.stack, "s3"):
        r, took = _timed(lambda: api.post("/v1/photos", files=one, headers=user.auth, timeout=30))
        _assert_unavailable(r, took, "storage", "Storage is not answering; try again in a minute.")
        assert api.get("/v1/jobs", headers=user.auth, timeout=5).status_code == 200  # needs no storage
        assert api.get("/healthz", timeout=5).status_code == 200
        _assert_not_ready(f"{platform.url}/readyz", "storage")
        _assert_not_ready(worker_ready, "storage")
        assert _rows(user_id) == (0, 0)  # no row without its object
    # A write that timed out lands when storage resumes: the gateway deletes it then (no object
    # without its row).
    prefix = storage.user_prefix(user_id)
    wait_until(lambda: not storage.list_keys(prefix), timeout=30, what="the timed-out writes deleted")
    body = api.post("/v1/photos", files=_files(2), headers=user.auth)
    assert body.status_code == 201, body.text
    assert _rows(user_id) == (2, 1)
    # A write that S3 finished only after the first check is deleted by the second one (2 s later).
    wait_until(lambda: len(storage.list_keys(prefix)) == 2, timeout=20, what="exactly the 2 new photos")


def test_database_hung_503_fast_and_what_needs_no_database_keeps_working(
    api: Api, platform: Platform, procs: Processes
):
    user = api.new_user()
    relay_ready = _health_process(procs, "relay")
    one = _files(1)
    job_id = api.get("/v1/jobs", headers=user.auth).json()["jobs"][0]["id"]  # the sign-up mail
    assert api.get(f"/v1/jobs/{job_id}", headers=user.auth).status_code == 200
    with frozen(platform.stack, "postgres"):
        for path in (f"/v1/jobs/{job_id}", "/v1/me"):  # the signed-in reads' async pool
            r, took = _timed(lambda path=path: api.get(path, headers=user.auth, timeout=30))
            _assert_unavailable(r, took, "database", "The database is not answering; try again in a minute.")
        r, took = _timed(lambda: api.post("/v1/photos", files=one, headers=user.auth, timeout=30))
        _assert_unavailable(r, took, "database", "The database is not answering; try again in a minute.")
        r, took = _timed(lambda: api.get("/v1/jobs", headers=user.auth, timeout=30))
        _assert_unavailable(r, took, "database", "The database is not answering; try again in a minute.")
        r, took = _timed(lambda: api.get("/v1/system", timeout=30))
        assert r.status_code == 200 and took < 1.0, (r.status_code, took)
        assert api.get("/healthz", timeout=5).status_code == 200
        _assert_not_ready(f"{platform.url}/readyz", "database")
        _assert_not_ready(relay_ready, "database")
    # Back: the gateway, relay and photos worker reconnect by themselves; the job runs once.
    r = wait_until(
        lambda: (r := api.post("/v1/photos", files=_files(1), headers=user.auth)).status_code == 201 and r,
        timeout=10,
        what="uploads to work again",
    )
    job = api.wait_job(r.json()["job"]["id"], user, timeout=90)
    assert job["status"] == "succeeded" and job["attempts"] == 1, job
    assert httpx.get(relay_ready, timeout=5).status_code == 200


def test_redis_hung_uploads_still_work_and_jobs_run_after(api: Api, platform: Platform):
    """Uploads need no Redis (outbox in Postgres; the rate limit falls back to memory)."""
    user = api.new_user()
    one = _files(1)
    with frozen(platform.stack, "redis"):
        r, took = _timed(lambda: api.post("/v1/photos", files=one, headers=user.auth, timeout=30))
        assert r.status_code == 201 and took < ANSWER_WITHIN, (r.status_code, took, r.text)
        r2, took = _timed(lambda: api.post("/v1/photos", files=one, headers=user.auth, timeout=30))
        assert r2.status_code == 201 and took < ANSWER_WITHIN, (r2.status_code, took, r2.text)
        _assert_not_ready(f"{platform.url}/readyz", "redis")
    for body in (r.json(), r2.json()):
        job = api.wait_job(body["job"]["id"], user, timeout=90)
        assert job["status"] == "succeeded" and job["attempts"] == 1, job


def test_event_stream_says_unavailable_while_the_database_is_hung(api: Api, platform: Platform):
    user = api.new_user()
    user_id = _user_id(api, user)
    with session_scope() as session:  # a job that stays queued: this platform runs no train worker
        job_id = str(enqueue(session, TrainLikeness(likeness_id=uuid.uuid4()), user_id=user_id).id)
    events: list[tuple[str, dict]] = []

    def follow() -> None:
        params = {"access_token": user.access_token}
        with api.stream("GET", f"/v1/jobs/{job_id}/events", params=params, timeout=30) as stream:
            name = "message"
            for line in stream.iter_lines():
                if line.startswith("event:"):
                    name = line[6:].strip()
                elif line.startswith("data:"):
                    events.append((name, json.loads(line[5:])))

    reader = threading.Thread(target=follow)
    reader.start()
    try:
        wait_until(lambda: events, timeout=10, what="the first event")
        with frozen(platform.stack, "postgres"):
            started = time.monotonic()
            reader.join(timeout=15)  # the stream re-reads the row 5 s after the last event
            took = time.monotonic() - started
        assert not reader.is_alive(), "the stream hung"
        assert took < 5.0 + ANSWER_WITHIN
        assert events[0][0] == "job" and events[0][1]["status"] == "queued"
        assert events[-1] == (
            "unavailable",
            {"detail": "The database is not answering; try again in a minute.", "dependency": "database"},
        )
    finally:  # the database is back (new connects may fail fast for a moment)
        cancel = f"/v1/jobs/{job_id}/cancel"
        wait_until(lambda: api.post(cancel, headers=user.auth).status_code in (200, 409), timeout=15)
        reader.join(timeout=30)


# --- a server that answers with an error --------------------------------------------------------

STORE_FAILING = "Storage is failing to save or read files right now; try again in a minute."


def test_storage_answering_5xx_gives_503_and_leaves_nothing_half_written(stack: LocalStack, procs: Processes):
    """S3 answers PUTs with 503 SlowDown / 500 InternalError / 503 ServiceUnavailable (SeaweedFS with a
    full disk answered InternalError): 503 + Retry-After + a sentence, no row, no orphaned object."""
    with FaultyS3(os.environ["S3_ENDPOINT_URL"]) as s3:
        port = free_port()
        procs.start("gateway-faulty-s3", "gateway", "--port", str(port), env={"S3_ENDPOINT_URL": s3.url})
        wait_for_port(port, timeout=60)
        with Api(base_url=f"http://127.0.0.1:{port}", timeout=30) as gateway:
            user = gateway.new_user()
            user_id = _user_id(gateway, user)
            two = _files(2)
            for status, code in ((503, "SlowDown"), (500, "InternalError"), (503, "ServiceUnavailable")):
                with s3.failing_puts(status, code, after=1):  # the first photo lands, the second fails
                    r, took = _timed(lambda: gateway.post("/v1/photos", files=two, headers=user.auth))
                    assert s3.puts_failed == 1, (code, s3.puts_failed)
                _assert_unavailable(r, took, "storage", STORE_FAILING)
                assert _rows(user_id) == (0, 0), code  # no row without its object
            with s3.failing_puts(403, "AccessDenied"):  # a refusal is no outage: the usual 500
                assert gateway.post("/v1/photos", files=two, headers=user.auth).status_code == 500
            assert _rows(user_id) == (0, 0)
            pose = {"file": ("pose.jpg", jpeg(astronaut()), "image/jpeg")}
            with s3.failing_puts(500, "InternalError"):
                r, took = _timed(lambda: gateway.post("/v1/poses", files=pose, headers=user.auth))
            _assert_unavailable(r, took, "storage", STORE_FAILING)
            with session_scope() as session:
                assert not session.scalars(select(PosePhoto).where(PosePhoto.user_id == user_id)).all()
            # The first photo of each upload was written: it is deleted (no object without its row).
            prefix = storage.user_prefix(user_id)
            wait_until(lambda: not storage.list_keys(prefix), timeout=30, what="the written photos deleted")
            # The store is well again: the same upload works through the same proxy.
            r = gateway.post("/v1/photos", files=two, headers=user.auth)
            assert r.status_code == 201, r.text
            assert _rows(user_id) == (2, 1)
            wait_until(lambda: len(storage.list_keys(prefix)) == 2, timeout=20, what="the 2 photos stored")


# --- a restarted server: jobs in flight finish exactly once ---------------------------------------


def _photos_checked(user_id: uuid.UUID) -> list[str]:
    with session_scope() as session:
        return [str(s) for s in session.scalars(select(Photo.status).where(Photo.user_id == user_id))]


def _check_running(api: Api, n: int) -> tuple[UserSession, uuid.UUID, str]:
    """A new user whose upload of `n` photos is being checked right now: (user, user id, job id)."""
    user = api.new_user()
    job_id = api.post("/v1/photos", files=_files(n), headers=user.auth).json()["job"]["id"]
    wait_until(
        lambda: api.get(f"/v1/jobs/{job_id}", headers=user.auth).json()["status"] == "running",
        timeout=60,
        interval=0.05,
        what="the check to start",
    )
    return user, _user_id(api, user), job_id


@pytest.mark.slow
def test_redis_restart_mid_job_job_and_stream_finish_exactly_once(api: Api, platform: Platform):
    user, user_id, job_id = _check_running(api, 12)
    seen: list[dict] = []
    reader = threading.Thread(target=lambda: seen.extend(api.follow_events(job_id, user, timeout=120)))
    reader.start()
    with restarted(platform.stack, "redis"):
        time.sleep(3)
    reader.join(timeout=120)
    assert seen and seen[-1]["status"] == "succeeded", seen[-1:]  # the stream went on to the end
    job = api.wait_job(job_id, user, timeout=120)
    assert job["status"] == "succeeded", job
    assert job["result"] == {"accepted": 12, "rejected": 0}
    assert sorted(_photos_checked(user_id)) == ["accepted"] * 12
    # The workers reconnected: a new job after the restart runs too.
    again = api.post("/v1/photos", files=_files(1), headers=user.auth).json()
    assert api.wait_job(again["job"]["id"], user, timeout=90)["status"] == "succeeded"


@pytest.mark.slow
def test_postgres_restart_mid_job_job_finishes_exactly_once(api: Api, platform: Platform):
    user, user_id, job_id = _check_running(api, 12)
    with postgres_restarted(platform.stack):
        r, took = _timed(lambda: api.get(f"/v1/jobs/{job_id}", headers=user.auth, timeout=30))
        _assert_unavailable(r, took, "database", "The database is not answering; try again in a minute.")
        time.sleep(2)
    job = api.wait_job(job_id, user, timeout=120)
    assert job["status"] == "succeeded", job
    assert job["result"] == {"accepted": 12, "rejected": 0}
    assert sorted(_photos_checked(user_id)) == ["accepted"] * 12
    assert _rows(user_id) == (12, 1)  # one upload, one check: nothing doubled by the retry


def _mails_to(stack: LocalStack, address: str) -> int:
    box = mailbox.Maildir(stack.mail_dir, create=False)
    return sum(
        message_from_bytes(box.get_bytes(k), policy=policy.default)["To"] == address for k in box.iterkeys()
    )


@pytest.mark.slow
def test_smtp_down_longer_than_a_few_retries_each_mail_sent_once(api: Api, platform: Platform):
    email = f"outage-{uuid.uuid4().hex[:8]}@example.com"
    with restarted(platform.stack, "smtp", signal.SIGKILL):
        r = api.post("/v1/auth/signup", json={"email": email, "password": "correct horse battery"})
        assert r.status_code == 202  # signing up needs no mail server: the mail is a job
        time.sleep(40)  # longer than the notifier's first four tries (2 + 4 + 8 + 16 s)
        assert _mails_to(platform.stack, email) == 0
    wait_until(lambda: _mails_to(platform.stack, email) >= 1, timeout=120, what="the mail")
    time.sleep(3)
    assert _mails_to(platform.stack, email) == 1


def _blocked_by(pid: int) -> int:
    """How many database backends wait for a lock that backend `pid` holds."""
    from sqlalchemy import text

    waiting = text(
        "SELECT count(*) FROM pg_stat_activity WHERE CAST(:pid AS int) = ANY(pg_blocking_pids(pid))"
    )
    with session_scope() as session:
        return int(session.scalar(waiting, {"pid": pid}))


def test_a_full_connection_pool_is_503_not_500(api: Api, procs: Processes) -> None:
    """A gateway whose one pooled connection is busy (a request waiting for a row lock, here held by
    the test) answers the next request that needs the database with the 503 of an outage, after
    DATABASE_POOL_TIMEOUT, and serves again once the connection is back."""
    from sqlalchemy import text

    port = free_port()
    pool = {"DB_POOL_SIZE": "1", "DB_MAX_OVERFLOW": "0", "DATABASE_POOL_TIMEOUT": "1",
            "DATABASE_LOCK_TIMEOUT_MS": "6000", "DATABASE_READ_TIMEOUT": "10"}  # fmt: skip
    procs.start("gateway-one-connection", "gateway", "--port", str(port), env=pool)
    wait_for_port(port, timeout=60)
    url = f"http://127.0.0.1:{port}"
    user = api.new_user()
    answers: list[httpx.Response] = []

    def start_training() -> None:  # takes the gateway's only connection, then waits for the user's row
        body = {"class_word": "woman"}
        answers.append(httpx.post(f"{url}/v1/likenesses", json=body, headers=user.auth, timeout=30))

    with session_scope() as first:
        first.execute(text("SELECT id FROM users WHERE id = :id FOR UPDATE"), {"id": _user_id(api, user)})
        waiting = threading.Thread(target=start_training)
        waiting.start()
        # Until the request holds the gateway's one connection and waits for the row (it is this new
        # gateway's first request), not a fixed 1.5 s: the 503 below is only due once it does.
        holder = first.scalar(text("SELECT pg_backend_pid()"))
        wait_until(lambda: _blocked_by(holder), timeout=30, interval=0.05, what="the request to wait")
        # a route on the SQLAlchemy pool (the signed-in reads have their own, shared/db_async.py)
        r, took = _timed(lambda: httpx.get(f"{url}/v1/jobs", headers=user.auth, timeout=30))
        assert r.status_code == 503, r.text
        # Postgres answers; the process is busy: not "the database is not answering ... in a minute"
        assert r.json() == {"detail": "The service is busy right now; try again in a few seconds.",
                            "dependency": "database"}  # fmt: skip
        assert took < ANSWER_WITHIN and r.headers["Retry-After"] == "5"
    waiting.join(timeout=30)
    assert answers and answers[0].status_code == 409, answers  # served: no photos to train on yet
    assert httpx.get(f"{url}/v1/me", headers=user.auth, timeout=30).status_code == 200


def test_an_upload_whose_body_comes_slowly_holds_no_database_connection(api: Api, procs: Processes) -> None:
    """The upload routes check the sign-in and consent (the database), then read the body: the
    connection went back to the pool only at the end, so a client dripping its body held it for up
    to the body timeout, and a few such clients made every other user's request a 503."""
    port = free_port()
    pool = {"DB_POOL_SIZE": "1", "DB_MAX_OVERFLOW": "0", "DATABASE_POOL_TIMEOUT": "1"}
    procs.start("gateway-slow-upload", "gateway", "--port", str(port), env=pool)
    wait_for_port(port, timeout=60)
    url = f"http://127.0.0.1:{port}"
    dripping, other = api.new_user(), api.new_user()
    for path in ("/v1/photos", "/v1/poses"):
        with socket.create_connection(("127.0.0.1", port), timeout=30) as slow:
            head = (
                f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: {dripping.auth['Authorization']}\r\n"
                "Content-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: 100000\r\n\r\n"
            )
            slow.sendall(head.encode() + b"--XyZ\r\nContent-Disposition: form-data; name=")
            time.sleep(2)  # the checks are done and the body is awaited (the drip goes on)
            r = httpx.get(f"{url}/v1/jobs", headers=other.auth, timeout=30)
            assert r.status_code == 200, (path, r.text)


def test_an_upload_whose_body_ends_after_the_erasure_was_asked_for_stores_nothing(
    api: Api, platform: Platform
) -> None:
    """An upload passed its checks, its body came slowly, the account's erasure was asked for
    meanwhile: the upload stored its photos anyway (201), and if it committed after the erasure had
    listed the bucket, they stayed behind with their rows gone. Now the store reads the account
    under a share lock: an erasure already asked for ends the upload with 401 and nothing stored."""
    user = api.new_user()
    user_id = _user_id(api, user)
    photo = jpeg(astronaut())
    boundary = "XyZ"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="a.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + photo
        + f"\r\n--{boundary}--\r\n".encode()
    )
    port = int(platform.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as slow:
        head = (
            f"POST /v1/photos HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {user.auth['Authorization']}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        slow.sendall(head.encode() + body[:100])
        time.sleep(1)  # the checks passed; the body is awaited
        with session_scope() as session:  # DELETE /v1/me's first step, as its transaction writes it
            session.execute(text("UPDATE users SET deleting = true WHERE id = :id"), {"id": user_id})
        slow.sendall(body[100:])
        answer = slow.recv(65536).decode(errors="replace")
    assert answer.startswith("HTTP/1.1 401"), answer[:300]
    with session_scope() as session:
        assert session.scalar(select(func.count()).select_from(Photo).where(Photo.user_id == user_id)) == 0
    assert storage.list_keys(storage.user_prefix(user_id)) == []
