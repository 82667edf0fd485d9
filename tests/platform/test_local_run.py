"""`studio run` (what `make run` starts): ready when it says so, a crashed service restarts while the
rest keeps serving, and a dead server stops everything without leaving a process behind."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from shared.localstack import free_port, free_port_block
from tests.conftest import FAST_JOBS, REPO, wait_until
from tests.pictures import astronaut, jpeg

BANNER = "Portrait Studio is running."


def _children(pid: int, *words: str) -> list[psutil.Process]:
    """Living children of `pid` (not their pool processes) whose command line holds all `words`."""
    found = []
    for p in psutil.Process(pid).children():
        try:
            if all(w in p.cmdline() for w in words) and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
        except psutil.NoSuchProcess:
            pass
    return found


class Run:
    """`python -m shared.cli run` on free ports with its data in a temp dir; its output is collected,
    and the moment the banner is printed the gateway's /readyz is asked at once."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
        env.update({**FAST_JOBS, "VAR_DIR": str(root), "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"})
        env.pop("LOG_JSON")  # `make run`'s own default
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "shared.cli", "run", "--port", str(self.port)]
            + ["--base-port", str(free_port_block(27))],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self.ready_at_banner: int | str | None = None
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if BANNER in line and self.ready_at_banner is None:
                try:
                    self.ready_at_banner = httpx.get(f"{self.url}/readyz", timeout=5).status_code
                except httpx.HTTPError as e:
                    self.ready_at_banner = repr(e)
            self.lines.append(line)

    def output(self) -> str:
        return "".join(self.lines)

    def stop(self) -> None:
        family = psutil.Process(self.proc.pid).children(recursive=True) if self.proc.poll() is None else []
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        for p in family:  # nothing may outlive it; kill leftovers so a failure does not leak them
            if p.is_running():
                p.kill()


@pytest.fixture
def local_run() -> "Run":
    root = Path(tempfile.mkdtemp(prefix="studio-run-"))
    root.chmod(0o755)  # pgserver runs PostgreSQL as its own system user
    run = Run(root)
    yield run
    run.stop()
    shutil.rmtree(root, ignore_errors=True)


def _photo_check_succeeds(url: str) -> None:
    """A new user uploads a photo; the `photos` worker checks it."""
    with httpx.Client(base_url=url, timeout=60) as api:
        creds = {"email": f"run-{time.time_ns()}@example.com", "password": "correct horse battery"}
        assert api.post("/v1/auth/signup", json=creds).status_code == 202
        auth = {"Authorization": f"Bearer {api.post('/v1/auth/login', json=creds).json()['access_token']}"}
        assert api.post("/v1/me/consent", json={"accept": True}, headers=auth).status_code == 200
        up = api.post(
            "/v1/photos", files=[("files", ("a.jpg", jpeg(astronaut()), "image/jpeg"))], headers=auth
        )
        job_id = up.json()["job"]["id"]
        wait_until(
            lambda: api.get(f"/v1/jobs/{job_id}", headers=auth).json()["status"] == "succeeded",
            timeout=90,
            what="the photo check",
        )


def test_run_restarts_a_crashed_worker_and_stops_when_a_server_dies(local_run: Run) -> None:
    try:
        wait_until(lambda: BANNER in local_run.output(), timeout=240, interval=0.5)
    except TimeoutError:
        pytest.fail(f"no banner; the output was:\n{local_run.output()[-4000:]}")
    assert local_run.ready_at_banner == 200, local_run.ready_at_banner  # printed when /readyz answers
    # One terminal, one format: the local servers' lines were JSON among plain text.
    json_lines = [line for line in local_run.output().splitlines() if line.startswith('{"')]
    assert not json_lines, json_lines[:3]
    # Every process's health port (its /metrics too) listens on 127.0.0.1 only, like the public port.
    family = psutil.Process(local_run.proc.pid).children(recursive=True)
    listening = {c.laddr.ip for p in family for c in p.net_connections("inet") if c.status == "LISTEN"}
    assert listening == {"127.0.0.1"}, listening

    # SIGKILL a worker's main process: it comes back, and the rest served all along.
    (victim,) = _children(local_run.proc.pid, "worker", "photos")
    victim.kill()
    assert httpx.get(f"{local_run.url}/healthz", timeout=10).text == "ok"
    (reborn,) = wait_until(
        lambda: [p for p in _children(local_run.proc.pid, "worker", "photos") if p.pid != victim.pid],
        timeout=30,
        what="the photos worker to be restarted",
    )
    assert local_run.proc.poll() is None and "restarting in 1 s" in local_run.output()
    _photo_check_succeeds(local_run.url)  # the new worker does the work

    # A server dies: everything stops, nothing is left running.
    family = psutil.Process(local_run.proc.pid).children(recursive=True)
    (redis,) = [p for p in family if "redis-server" in " ".join(p.cmdline())]
    redis.kill()
    assert local_run.proc.wait(timeout=90) == 1
    assert "the local redis server stopped; stopping everything" in local_run.output()
    left = [p for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert left == [], [p.cmdline() for p in left]
