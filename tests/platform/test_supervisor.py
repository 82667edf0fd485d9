"""The supervisor of `studio run`: backoff between restarts, reset after a healthy run, and a stop that
reaches every process of a service (no server needed: real child processes, a fake clock)."""

import os
import sys
import time

import psutil

from shared.supervisor import Service, Supervisor
from tests.conftest import wait_until

CRASH = [sys.executable, "-c", "import sys; sys.exit(3)"]
# A service with a child of its own, like a Celery worker and its pool process.
WITH_CHILD = [
    sys.executable,
    "-c",
    "import subprocess, time; subprocess.Popen(['sleep', '60']); time.sleep(60)",
]


def test_crashes_restart_with_doubling_backoff_capped_and_reset_by_a_healthy_run() -> None:
    now = [0.0]
    crasher = Service("crasher", CRASH, dict(os.environ))
    sup = Supervisor([crasher], backoff_start=1.0, backoff_max=8.0, healthy_after=60.0, clock=lambda: now[0])
    sup.start()
    waits = []
    for _ in range(6):
        crasher.process.wait(timeout=30)
        sup.poll()  # notices the exit
        waits.append(crasher.restart_at - now[0])
        now[0] = crasher.restart_at - 0.01
        sup.poll()
        assert crasher.process.poll() is not None and crasher.restart_at is not None  # not yet
        now[0] += 0.01
        sup.poll()  # now it restarts
        assert crasher.restart_at is None
    assert waits == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert crasher.restarts == 6
    crasher.process.wait(timeout=30)
    now[0] += 61  # it ran (by the clock) longer than healthy_after: the backoff starts over
    sup.poll()
    assert crasher.restart_at - now[0] == 1.0
    sup.stop()
    now[0] += 5
    sup.poll()
    assert crasher.restarts == 6  # a stopped supervisor starts nothing


def test_stop_ends_every_process_of_each_service() -> None:
    sup = Supervisor([Service("parent", WITH_CHILD, dict(os.environ))])
    sup.start()
    parent = psutil.Process(sup.services[0].process.pid)
    (child,) = wait_until(parent.children, timeout=30, what="the child process")
    started = time.monotonic()
    sup.stop(timeout=5)
    assert time.monotonic() - started < 10
    assert not parent.is_running() or parent.status() == psutil.STATUS_ZOMBIE
    wait_until(lambda: not child.is_running() or child.status() == psutil.STATUS_ZOMBIE, timeout=10)
