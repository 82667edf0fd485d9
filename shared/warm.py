"""Warm-up state of a worker whose pool process loads (and compiles) models: /readyz answers 503
until the pool process has marked itself warm.

The health server runs in the Celery parent process and the models live in the pool process, so
the mark is a file: `studio worker generate` sets WARM_MARKER to a fresh path before the fork, the
pool process writes it once its models are loaded and every compiled shape is built or loaded
from the compile cache (services/generator/tasks.py). Without WARM_MARKER (tests, `studio
generate`) nothing waits.
"""

from __future__ import annotations

import os
from pathlib import Path

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
