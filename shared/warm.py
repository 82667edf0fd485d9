"""Warm-up state of a GPU worker whose pool process loads (and compiles) models: /readyz answers
503 until the pool process has marked itself warm.

The health server runs in the Celery parent process and the models live in the pool process, so
the mark is a file: `studio worker generate|train` sets WARM_MARKER to a fresh path before the
fork, the pool process writes it once its models are loaded and every compiled shape is built or
loaded from the compile cache (`Resident`, used by services/generator/tasks.py and
services/trainer/tasks.py). Without WARM_MARKER (tests, `studio generate`) nothing waits.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")

ENV = "WARM_MARKER"


def enabled() -> bool:
    """Whether this process (or its parent) waits for a warm-up."""
    return bool(os.environ.get(ENV))


def require_warm_up(folder: Path) -> Path:
    """Called by the parent before the fork: from now on /readyz waits for `mark_warm`."""
    marker = Path(folder) / "warm"
    marker.unlink(missing_ok=True)
    os.environ[ENV] = str(marker)
    return marker


def mark_warm(note: str) -> None:
    """The pool process is ready for jobs (`note`: shown by /readyz)."""
    path = os.environ.get(ENV)
    if path:
        Path(path).write_text(note)


def check_warm() -> None:
    """Raise RuntimeError while the warm-up is running (a /readyz check)."""
    path = os.environ.get(ENV)
    if path and not Path(path).exists():
        raise RuntimeError("models are loading and compiling")


class Resident(Generic[T]):
    """A pool process's resident model object (a pipeline), built once by `build` and shared by
    every job of the process.

    `start_in_background` (from Celery's `worker_process_init`) builds it on a thread as soon as
    the pool process starts: Celery kills a pool process whose init takes more than a few seconds,
    and a load plus compile takes seconds to minutes. A job that comes meanwhile waits in `get`
    for the same build; /readyz answers 503 until `mark_warm`."""

    def __init__(self, build: Callable[[], T], name: str):
        self.build, self.name = build, name
        self._lock = threading.Lock()
        self._value: T | None = None

    def get(self) -> T:
        """The resident object, built (and the process marked warm) on the first call.
        Raises what `build` raises; the next call tries again."""
        with self._lock:
            if self._value is None:
                began = time.monotonic()
                self._value = self.build()
                mark_warm(f"{self.name} ready in {time.monotonic() - began:.1f} s")
            return self._value

    def start_in_background(self) -> None:
        """Build on a daemon thread when this process waits for a warm-up (WARM_MARKER). The mark
        of an earlier pool process goes first: Celery replaces a pool process killed by a hard time
        limit or the OOM killer, and /readyz must answer 503 again while the new one warms up."""
        if enabled():
            Path(os.environ[ENV]).unlink(missing_ok=True)
            threading.Thread(target=self._get_logged, name=f"{self.name}-warm-up", daemon=True).start()

    def _get_logged(self) -> None:
        try:
            self.get()
        except Exception:  # the first job raises it again, with the job's error handling
            log.exception("%s warm-up failed", self.name)
