"""The one-round-trip signed-in reads (services/gateway/api/reads.py) answer exactly as the general
path does, and the pool's idle-only ping (shared/db.py) still hides a Postgres restart."""

import asyncio
import os
import signal
import uuid

import psutil
import pytest
from sqlalchemy import literal_column, select

from shared import db_async
from shared.config import get_settings
from tests.conftest import Api, Platform, wait_until
from tests.pictures import astronaut, jpeg


def _a_job(api: Api) -> tuple:
    user = api.new_user()
    r = api.post(
        "/v1/photos", files=[("files", ("me.jpg", jpeg(astronaut()), "image/jpeg"))], headers=user.auth
    )
    assert r.status_code == 201, r.text
    job = api.wait_job(r.json()["job"]["id"], user)
    return user, job


def test_job_status_and_account_read_like_the_general_path(api: Api) -> None:
    user, job = _a_job(api)
    # GET /v1/jobs (the ORM path) and GET /v1/jobs/{id} (one statement) show the same job.
    listed = api.get("/v1/jobs", headers=user.auth).json()["jobs"]
    assert api.get(f"/v1/jobs/{job['id']}", headers=user.auth).json() == next(
        j for j in listed if j["id"] == job["id"]
    )
    me = api.get("/v1/me", headers=user.auth)
    assert me.status_code == 200 and me.headers["content-type"] == "application/json"
    assert me.json()["email"] == user.email and me.json()["face_consent_at"]

    # Another user's job and an unknown id are simply not found; no token, or a bad one, is 401.
    stranger = api.new_user()
    for job_id in (job["id"], str(uuid.uuid4())):
        r = api.get(f"/v1/jobs/{job_id}", headers=stranger.auth)
        assert (r.status_code, r.json()) == (404, {"detail": "Job not found."})
    for headers in (
        {},
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": f"Bearer {user.refresh_token}"},
    ):
        assert api.get(f"/v1/jobs/{job['id']}", headers=headers).status_code == 401
        assert api.get("/v1/me", headers=headers).status_code == 401

    # A token does not outlive the erasure of its account.
    assert api.delete("/v1/me", headers=user.auth).status_code == 202
    assert api.get(f"/v1/jobs/{job['id']}", headers=user.auth).status_code == 401
    me = api.get("/v1/me", headers=user.auth)  # the pending erasure shows, until it is done
    assert me.status_code == 401 or (me.status_code == 200 and me.json()["erasing_since"]), me.text


def test_a_read_right_after_a_postgres_restart_answers(api: Api, platform: Platform) -> None:
    """Pooled connections that slept through a restart are pinged before use (they were idle longer
    than DATABASE_PING_IDLE_SECONDS), so the first reads after it answer 200, not 503."""
    user, job = _a_job(api)
    for _ in range(20):  # fill the gateway's pool with connections to the old server
        assert api.get(f"/v1/jobs/{job['id']}", headers=user.auth).status_code == 200
    _restart_postgres(platform.stack._pg)
    statuses = [api.get(f"/v1/jobs/{job['id']}", headers=user.auth).status_code for _ in range(5)]
    statuses += [api.get("/v1/me", headers=user.auth).status_code for _ in range(5)]
    assert statuses == [200] * 10, statuses


def _restart_postgres(pg) -> None:  # noqa: ANN001 - a pgserver.PostgresServer
    pid = pg.get_pid()
    os.kill(pid, signal.SIGQUIT)  # immediate shutdown: every connection dies
    wait_until(lambda: not psutil.pid_exists(pid), timeout=20, what="the postmaster to exit")
    pg.ensure_postgres_running()


def test_a_read_on_a_connection_used_just_before_a_restart_runs_again(
    stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection used less than DATABASE_PING_IDLE_SECONDS before a restart is not pinged: its
    read failed on the broken connection and the gateway answered 503 (production pings after 1 s
    of idle, a failover can be quicker). A read is safe to run again, on the next connection."""
    monkeypatch.setenv("DATABASE_PING_IDLE_SECONDS", "3600")
    get_settings.cache_clear()
    one = select(literal_column("1").label("one"))

    async def scenario() -> list[int]:
        try:
            for _ in range(3):  # the pool at its size, every connection just used
                await asyncio.gather(*(db_async.first_row(one, {}) for _ in range(8)))
            assert (await db_async.read_pool()).get_stats()["pool_size"] > 1
            _restart_postgres(stack._pg)
            return [(await db_async.first_row(one, {})).one for _ in range(6)]
        finally:
            await db_async.close_read_pool()

    try:
        assert asyncio.run(scenario()) == [1] * 6
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()


def test_a_job_reads_as_its_event_snapshot_does() -> None:
    """JobOut.of takes the row's own values (no strings parsed back): the same JSON as the event
    stream's snapshot (shared.jobs.events.job_snapshot) validated, in both languages."""
    from datetime import UTC, datetime, timedelta, timezone

    from services.gateway.api.schemas import JobOut, in_language
    from shared.i18n import current_locale
    from shared.jobs.events import job_snapshot
    from shared.models import Job, JobStatus

    started = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
    jobs = [
        Job(
            id=uuid.uuid4(),
            kind="train",
            status=JobStatus.failed,
            progress=0.123456789,
            stage="training step 2/36",
            attempts=2,
            max_attempts=3,
            error_code="storage_unavailable",
            error_message="S3 did not answer",
            result={"last_error": "EndpointConnectionError: Could not connect to the endpoint URL"},
            created_at=started,
            started_at=started.astimezone(timezone(timedelta(hours=9))),
            finished_at=None,
        ),
        Job(
            id=uuid.uuid4(),
            kind="photo_check",
            status=JobStatus.queued,
            progress=None,
            attempts=0,
            max_attempts=3,
            created_at=None,
        ),  # fmt: skip
    ]
    for locale in ("en", "ko"):
        token = current_locale.set(locale)
        try:
            for job in jobs:
                expected = JobOut.model_validate(in_language(job_snapshot(job))).model_dump_json()
                assert JobOut.of(job).model_dump_json() == expected
        finally:
            current_locale.reset(token)
