"""The guardian of `studio run`: stops what a killed `studio run` leaves behind.

`studio run` starts it first and tells it, line by line on its stdin, each process group (a service,
a server) and process (the Postgres postmaster, which pg_ctl starts outside our tree) it starts. If
`studio run` dies without stopping them (SIGKILL, the OOM killer), the pipe closes: the guardian
sends each SIGTERM (Postgres SIGINT: fast shutdown), waits up to 10 s, then SIGKILLs what is left
of the groups. A clean stop says `done` first and the guardian leaves quietly. `prctl(PR_SET_PDEATHSIG)`
alone reaches only direct children, not a service's own children (a Celery pool, a `sleep`).

Protocol: `group PID`, `process PID SIGNAL`, `done`.
"""

import os
import signal
import subprocess
import sys
import time
from typing import IO


class Guardian:
    """The parent's handle: `watch_group(pid)`, `watch_process(pid, sig)`, `close()` on a clean stop."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "shared.guardian"],
            stdin=subprocess.PIPE,
            text=True,
            start_new_session=True,  # Ctrl-C to `studio run` does not reach it
        )
        self._pipe: IO[str] = self.proc.stdin  # type: ignore[assignment]

    def _say(self, line: str) -> None:
        try:
            self._pipe.write(line + "\n")
            self._pipe.flush()
        except (BrokenPipeError, ValueError):
            pass

    def watch_group(self, pid: int) -> None:
        self._say(f"group {pid}")

    def watch_process(self, pid: int, sig: int = signal.SIGTERM) -> None:
        self._say(f"process {pid} {int(sig)}")

    def close(self) -> None:
        """Everything was stopped cleanly: the guardian leaves without touching anything."""
        self._say("done")
        try:
            self._pipe.close()
        except BrokenPipeError:
            pass
        self.proc.wait(timeout=10)


def _alive(pid: int, group: bool = False) -> bool:
    """Whether process `pid` (or any process of group `pid`) still exists."""
    try:
        (os.killpg if group else os.kill)(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def main() -> None:
    groups: set[int] = set()
    processes: dict[int, int] = {}
    for line in sys.stdin:
        word, *args = line.split()
        if word == "done":
            return
        if word == "group":
            groups.add(int(args[0]))
        elif word == "process":
            processes[int(args[0])] = int(args[1])
    # The pipe closed without `done`: the parent died. Stop what it started.
    for pgid in groups:
        try:
            os.killpg(pgid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pass
    for pid, sig in processes.items():
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (
        any(_alive(g, group=True) for g in groups) or any(_alive(p) for p in processes)
    ):
        time.sleep(0.2)
    for pgid in groups:
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


if __name__ == "__main__":
    main()
