"""Fixtures that start the real stack: Postgres, Redis, SeaweedFS S3, an SMTP catcher, the gateway,
the relay, the scheduler and real Celery workers — each as a child process on free ports.

- `stack`: the servers (session-wide); the test process's environment points at them.
- `platform`: gateway + relay + scheduler + `photos` and `notify` workers (session-wide).
- `procs`: start extra processes (e.g. a worker to SIGKILL) that stop after the test.
- `api`: an httpx client on the gateway; `new_user()` signs up, consents and logs in a fresh user.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from shared.localstack import LocalStack, free_port, free_port_block, wait_for_port

REPO = Path(__file__).resolve().parent.parent
FAST_JOBS = {  # short timings so failure tests finish in seconds
    "JOB_HEARTBEAT_SECONDS": "0.5",
    "JOB_STALE_SECONDS": "10",
    "REAPER_INTERVAL_SECONDS": "0.5",
    "RELAY_POLL_SECONDS": "0.1",
    "JOB_RETRY_SCALE": "0.1",  # retries wait a tenth of their production backoff
    "CLEANUP_INTERVAL_SECONDS": "1",
    "AUTH_RATE_LIMIT": "1000/minute",
    "UPLOAD_RATE_LIMIT": "1000/minute",
    "ENVIRONMENT": "test",
    "MODEL_PRESET": "tiny",
    "MODEL_DIR": str(REPO / "var" / "test-models"),  # tiny models are cached across runs
    "LOG_JSON": "false",
    "HEALTH_PORT": "0",
}


def _reset_caches() -> None:
    from shared import storage
    from shared.config import get_settings
    from shared.db import reset_engine
    from shared.jobs.events import reset_clients

    get_settings.cache_clear()
    reset_engine()
    reset_clients()
    storage.client.cache_clear()
    storage.public_client.cache_clear()
    from shared.jobs.celery_app import celery_app

    celery_app.conf.broker_url = get_settings().redis_url


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    # Not under pytest's 0700 tmp dir: pgserver runs PostgreSQL as its own system user.
    root = Path(tempfile.mkdtemp(prefix="studio-stack-"))
    root.chmod(0o755)
    local = LocalStack(root, base_port=free_port_block(6)).start()
    env = {**local.env(), **FAST_JOBS}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    _reset_caches()
    from shared import storage
    from shared.migrations import upgrade_head

    upgrade_head()
    storage.ensure_bucket()
    yield local
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    local.stop()
    shutil.rmtree(root, ignore_errors=True)
    _reset_caches()


@dataclass
class Processes:
    env: dict[str, str]
    logs: Path
    running: list[subprocess.Popen] = field(default_factory=list)

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
        log = open(self.logs / f"{name}-{uuid.uuid4().hex[:6]}.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "shared.cli", *args],
            cwd=REPO,
            env={**self.env, **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: killpg reaches the pool children
        )
        proc.log_path = log.name  # type: ignore[attr-defined]
        self.running.append(proc)
        return proc

    def worker(self, queue: str, **env: str) -> subprocess.Popen:
        return self.start(f"worker-{queue}", "worker", queue, env=env)

    def warming_worker(self, queue: str, timeout: float, **env: str) -> subprocess.Popen:
        """`studio worker <queue>` (a GPU queue), checked to answer /readyz 503 ("models are loading
        and compiling") while its pool process warms up, then 200 within `timeout` seconds."""
        port = free_port()
        worker = self.worker(queue, HEALTH_PORT=str(port), **env)
        wait_for_port(port, timeout=60)
        url = f"http://127.0.0.1:{port}/readyz"
        first = httpx.get(url, timeout=5)
        assert first.status_code == 503, first.text
        assert "models are loading and compiling" in first.text
        wait_until(lambda: httpx.get(url, timeout=5).status_code == 200, timeout=timeout, what="warm")
        return worker

    def kill(self, proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)

    def stop_all(self) -> None:
        for proc in self.running:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.running:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        self.running.clear()


def _child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env["PYTHONPATH"] = str(REPO)
    return env


@pytest.fixture(scope="session")
def platform(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator["Platform"]:
    port = free_port()
    env = {**_child_env(), "PUBLIC_URL": f"http://127.0.0.1:{port}"}  # links in mails too
    procs = Processes(env, tmp_path_factory.mktemp("logs"))
    health = free_port()  # the gateway's /metrics (and probes) port, never the public one
    procs.start("gateway", "gateway", "--port", str(port), env={"HEALTH_PORT": str(health)})
    procs.start("relay", "relay")
    procs.start("scheduler", "scheduler")
    procs.worker("photos")
    procs.worker("notify")
    wait_for_port(port, timeout=60)
    yield Platform(f"http://127.0.0.1:{port}", stack, procs, f"http://127.0.0.1:{health}")
    procs.stop_all()


@dataclass
class Platform:
    url: str
    stack: LocalStack
    procs: Processes
    health_url: str  # the gateway's HEALTH_PORT: /healthz, /readyz, /metrics


@pytest.fixture
def procs(stack: LocalStack, tmp_path: Path) -> Iterator[Processes]:
    p = Processes(_child_env(), tmp_path)
    yield p
    p.stop_all()


class Api(httpx.Client):
    """An httpx client on the gateway with helpers for common walks."""

    def new_user(
        self,
        *,
        consent: bool = True,
        email: str | None = None,
        password: str = "correct horse battery",
    ) -> "UserSession":
        email = email or f"user-{uuid.uuid4().hex[:10]}@example.com"
        assert self.post("/v1/auth/signup", json={"email": email, "password": password}).status_code == 202
        tokens = self.post("/v1/auth/login", json={"email": email, "password": password}).json()
        user = UserSession(email, password, tokens["access_token"], tokens["refresh_token"])
        if consent:
            r = self.post("/v1/me/consent", json={"accept": True}, headers=user.auth)
            assert r.status_code == 200, r.text
        return user

    def wait_job(
        self,
        job_id: str,
        user: "UserSession",
        timeout: float = 120.0,
        until: tuple[str, ...] = ("succeeded", "failed", "canceled"),
    ) -> dict:
        deadline = time.monotonic() + timeout
        job: dict = {}
        while time.monotonic() < deadline:
            r = self.get(f"/v1/jobs/{job_id}", headers=user.auth)
            # a 503 (a dependency coming back: the read pool reconnects on the next read) is polled
            # again, as a client honouring Retry-After does; any other answer must be the job
            assert r.status_code in (200, 503), (r.status_code, r.text)
            job = r.json() if r.status_code == 200 else job
            if job.get("status") in until:
                return job
            time.sleep(0.2)
        raise TimeoutError(f"job {job_id} still {job.get('status')} after {timeout}s: {job}")

    def follow_events(self, job_id: str, user: "UserSession", timeout: float = 240.0) -> list[dict]:
        """Follow the job's server-sent events until it ends, as a browser's EventSource would;
        returns every event (the last one is the ended job)."""
        seen: list[dict] = []
        params = {"access_token": user.access_token}
        with self.stream("GET", f"/v1/jobs/{job_id}/events", params=params, timeout=timeout) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            for line in stream.iter_lines():
                if line.startswith("data:"):
                    seen.append(json.loads(line[5:]))
                    if seen[-1]["status"] in ("succeeded", "failed", "canceled"):
                        return seen
        raise TimeoutError(f"job {job_id}: the event stream ended early; last {seen[-1:]}")


@dataclass
class UserSession:
    email: str
    password: str
    access_token: str
    refresh_token: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


@pytest.fixture
def api(platform: Platform) -> Iterator[Api]:
    with Api(base_url=platform.url, timeout=60) as client:
        yield client


def studio(command: str, *args: str) -> subprocess.CompletedProcess:
    """`studio <command> <args>` in a child process on the tiny preset, one torch thread."""
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", command, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(REPO), "MODEL_PRESET": "tiny", "OMP_NUM_THREADS": "1"},
    )


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.2, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"{what} not met after {timeout}s")
