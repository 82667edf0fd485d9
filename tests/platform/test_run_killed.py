"""`studio run` killed with SIGKILL (as the OOM killer does) leaves no server or service running
unsupervised, the next start works, and its clean stop stops Postgres too (issue #22, item 9).

The parent here is a small process that starts what `studio run` starts, the same way: the local
servers (`LocalStack`) and a supervised service with a child of its own (`Supervisor`)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from shared.localstack import LocalStack, free_port_block
from tests.conftest import REPO, wait_until

PARENT = """
import json, os, sys, time
from pathlib import Path
from shared.guardian import Guardian
from shared.localstack import LocalStack
from shared.supervisor import Service, Supervisor
guardian = Guardian()
stack = LocalStack(Path(sys.argv[1]), base_port=int(sys.argv[2]), guardian=guardian).start()
service = Service("svc", [sys.executable, "-c",
    "import subprocess, time; subprocess.Popen(['sleep', '300']); time.sleep(300)"], dict(os.environ))
Supervisor([service], guardian=guardian).start()
time.sleep(1)
print(json.dumps({"servers": [p.pid for p in stack.processes], "service": service.process.pid,
                  "postmaster": stack._pg.get_pid()}), flush=True)
time.sleep(600)
"""


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_children_die_with_a_killed_parent_and_the_next_start_and_stop_are_clean() -> None:
    root = Path(tempfile.mkdtemp(prefix="studio-killed-"))
    root.chmod(0o755)
    base = free_port_block(6)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(root), str(base)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    again = None
    try:
        started = json.loads(parent.stdout.readline())
        service = psutil.Process(started["service"])
        children = [
            started["service"],
            *(c.pid for c in service.children()),  # a service's own child (a Celery pool)
            *started["servers"],
            *(c.pid for s in started["servers"] for c in psutil.Process(s).children(recursive=True)),
            started["postmaster"],
        ]
        assert all(_alive(pid) for pid in children)
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        wait_until(
            lambda: not any(_alive(pid) for pid in children),
            timeout=20,
            what="the servers and services to end",
        )
        # The next start works on the same data and ports ...
        again = LocalStack(root, base_port=base).start()
        assert again.dead_server() is None
        postmaster = again._pg.get_pid()
        # ... and its clean stop stops Postgres too (the killed holder no longer counts as one).
        again.stop()
        again = None
        wait_until(lambda: not _alive(postmaster), timeout=20, what="Postgres stopped")
    finally:
        if parent.poll() is None:
            parent.kill()
        if again is not None:
            again.stop()
        for proc in psutil.process_iter(["pid", "cmdline"]):  # nothing of ours left, whatever failed
            if str(root) in " ".join(proc.info["cmdline"] or []):
                proc.kill()
        time.sleep(0.5)
        shutil.rmtree(root, ignore_errors=True)


def test_a_start_refuses_in_words_while_the_ports_are_taken(tmp_path: Path) -> None:
    base = free_port_block(6)
    holder = subprocess.Popen([sys.executable, "-m", "http.server", str(base), "--bind", "127.0.0.1"])
    try:
        wait_until(
            lambda: not LocalStack(tmp_path, base_port=base).ports() or _bound(base), what="port bound"
        )
        try:
            LocalStack(tmp_path / "data", base_port=base).start(wait_for_ports=1.0)
        except RuntimeError as e:
            message = str(e)
        else:
            raise AssertionError("started on a taken port")
        assert f"port {base} (redis) is in use" in message
        assert "Is another `studio run` (or its servers) still running?" in message
    finally:
        holder.kill()
        holder.wait()


def _bound(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_a_run_refuses_in_words_when_the_gateways_port_is_taken(tmp_path: Path) -> None:
    """The gateway's port (and the services' health ports) are checked before anything starts: a
    taken one made the gateway crash and restart forever without a word (a newcomer's finding)."""
    base, port = free_port_block(27), free_port_block(1)
    holder = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"])
    try:
        wait_until(lambda: _bound(port), what="port bound")
        env = {**os.environ, "VAR_DIR": str(tmp_path / "var")}
        started = time.monotonic()
        run = subprocess.run(
            [sys.executable, "-m", "shared.cli", "run", "--port", str(port), "--base-port", str(base)],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert run.returncode == 1, (run.returncode, run.stderr[-500:])
        assert time.monotonic() - started < 30
        assert f"port {port} (gateway) is in use" in run.stderr
        assert "studio run --port 8001 --base-port 18330" in run.stderr  # how to run beside it
        assert not (tmp_path / "var" / "postgres").exists()  # nothing was started
    finally:
        holder.kill()
        holder.wait()
