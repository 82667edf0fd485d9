"""A small process supervisor for `studio run`: keep each service up, restarting a crashed one with
exponential backoff while the others keep serving.

Each service runs in its own process group (a Celery worker's pool processes included), so a crash
takes its orphans with it and a stop reaches every process of the service. Restart rules follow
systemd's `Restart=on-failure` with a growing `RestartSec`: 1 s after the first crash, doubling on each
crash that follows a short run, at most 30 s; a run longer than `healthy_after` starts again from 1 s.
(supervisord does the same as a daemon with its own config; here it is a loop inside `studio run`.)

Every child is started with `die_with_parent`: if `studio run` itself is killed (SIGKILL, the OOM
killer), the kernel sends each child SIGTERM (Linux `prctl(PR_SET_PDEATHSIG)`), and the guardian
(shared/guardian.py) stops their process groups (their own children too) and Postgres, so no service
runs on unsupervised and the next `make run` finds its ports free.
"""

import ctypes
import ctypes.util
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.guardian import Guardian

log = logging.getLogger(__name__)


@dataclass
class Service:
    """One supervised command: `argv` run with `env`, restarted when it exits."""

    name: str
    argv: list[str]
    env: dict[str, str]
    process: subprocess.Popen | None = None
    started_at: float = 0.0
    crashes: int = 0  # crashes in a row, each after a short run
    restart_at: float | None = None
    restarts: int = 0  # every restart since the start, for the log and tests


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent() -> None:
    """A `preexec_fn`: the child gets SIGTERM when the process that started it dies, however it
    dies (Linux `prctl(PR_SET_PDEATHSIG)`; elsewhere nothing). If the parent already died before
    this ran (the child was re-parented), the child ends at once."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if parent == 1 or os.getppid() != parent:
        os._exit(1)


def _killpg(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


@dataclass
class Supervisor:
    services: list[Service]
    backoff_start: float = 1.0  # seconds before the first restart
    backoff_max: float = 30.0
    healthy_after: float = 60.0  # a run this long resets the backoff
    clock: Callable[[], float] = time.monotonic
    guardian: "Guardian | None" = None  # told each process group, to stop them if we are killed
    _stopping: bool = field(default=False, init=False)

    def start(self) -> None:
        for service in self.services:
            self._spawn(service)

    def _spawn(self, service: Service) -> None:
        service.process = subprocess.Popen(
            service.argv, env=service.env, start_new_session=True, preexec_fn=die_with_parent
        )
        if self.guardian is not None:
            self.guardian.watch_group(service.process.pid)
        service.started_at, service.restart_at = self.clock(), None

    def delay(self, crashes: int) -> float:
        """Seconds to wait before restarting after `crashes` short-lived runs in a row (>= 1)."""
        return min(self.backoff_max, self.backoff_start * 2 ** (crashes - 1))

    def poll(self) -> None:
        """Notice services that exited and restart those whose backoff has passed; call it often."""
        now = self.clock()
        for service in self.services:
            proc = service.process
            if proc is not None and service.restart_at is None and proc.poll() is not None:
                _killpg(proc.pid, signal.SIGKILL)  # orphans of the crashed process (pool children)
                ran = now - service.started_at
                service.crashes = 1 if ran >= self.healthy_after else service.crashes + 1
                wait = self.delay(service.crashes)
                service.restart_at = now + wait
                log.warning(
                    "%s exited with %s after %.0f s; restarting in %.0f s",
                    service.name,
                    proc.returncode,
                    ran,
                    wait,
                )
            if service.restart_at is not None and now >= service.restart_at and not self._stopping:
                service.restarts += 1
                self._spawn(service)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM every service's process group, then SIGKILL what is left after `timeout`."""
        self._stopping = True
        running = [s.process for s in self.services if s.process is not None and s.process.poll() is None]
        for proc in running:
            _killpg(proc.pid, signal.SIGTERM)
        deadline = self.clock() + timeout
        for proc in running:
            try:
                proc.wait(timeout=max(0.1, deadline - self.clock()))
            except subprocess.TimeoutExpired:
                pass
            _killpg(proc.pid, signal.SIGKILL)  # the group's leftovers, or the process itself
