"""Health and readiness of every process; the health server of those that are not web servers.

`/healthz`: the process is alive (liveness: never looks at a dependency). `/readyz`: every dependency
the process uses answers within `readiness_timeout` (checked in parallel); else 503 naming those that
do not. `/metrics`: Prometheus. Celery's pool processes write metrics to PROMETHEUS_MULTIPROC_DIR;
this server aggregates them.
"""

import os
import smtplib
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client import REGISTRY as DEFAULT_REGISTRY

from shared.config import get_settings

# What each process talks to (ARCHITECTURE.md); its /readyz checks exactly these.
BASE = ("database", "redis")
PROCESS_DEPENDENCIES: dict[str, tuple[str, ...]] = {
    "gateway": (*BASE, "storage"),
    "relay": BASE,
    "scheduler": BASE,
    "worker-photos": (*BASE, "storage"),
    "worker-train": (*BASE, "storage", "warm"),
    "worker-generate": (*BASE, "storage", "warm"),
    "worker-notify": (*BASE, "storage", "smtp"),
}


def _check_database() -> None:
    from sqlalchemy import text

    from shared.db import get_engine

    with get_engine().connect() as conn:
        conn.execute(text("SELECT 1"))


@lru_cache
def _redis():  # type: ignore[no-untyped-def]
    import redis

    s = get_settings()
    return redis.Redis.from_url(s.redis_url, **s.redis_options())


def _check_redis() -> None:
    _redis().ping()


class WriteProbe:
    """Whether storage takes writes: a store whose disk is full still answers reads (HEAD, GET)
    and refuses every PUT. A 2-byte object under `health/` is written at most once per
    `readiness_write_probe_seconds` (cheap: one PUT per process and interval); a failed write is
    remembered (and raised again) until the next probe, which comes sooner (a fifth of it)."""

    def __init__(self) -> None:
        self.at = float("-inf")
        self.error: BaseException | None = None
        self._lock = threading.Lock()

    def check(self) -> None:
        from shared import storage

        every = get_settings().readiness_write_probe_seconds
        with self._lock:
            due = self.at + (every / 5 if self.error else every) <= time.monotonic()
            if due:
                self.at = time.monotonic()
        if due:
            try:
                storage.put_bytes(f"health/{socket.gethostname()}-{os.getpid()}", b"ok", "text/plain")
                self.error = None
            except Exception as e:
                self.error = e
        if self.error is not None:
            raise self.error


_write_probe = WriteProbe()


def _check_storage() -> None:
    from shared import storage

    storage.client().head_bucket(Bucket=storage.bucket())
    _write_probe.check()


def _check_smtp() -> None:
    s = get_settings()
    kind = smtplib.SMTP_SSL if s.smtp_security == "ssl" else smtplib.SMTP
    with kind(s.smtp_host, s.smtp_port, timeout=s.readiness_timeout) as client:  # reads the greeting
        client.noop()


def _check_warm() -> None:
    from shared.warm import check_warm

    check_warm()


CHECKS: dict[str, Callable[[], None]] = {
    "database": _check_database,
    "redis": _check_redis,
    "storage": _check_storage,
    "smtp": _check_smtp,
    "warm": _check_warm,  # models loaded and compiled (shared/warm.py)
}
_pool = ThreadPoolExecutor(max_workers=2 * len(CHECKS), thread_name_prefix="readyz")
_pending: dict[str, Future] = {}  # a check still waiting on a hung server is not started again
_lock = threading.Lock()


def dependencies_ready(dependencies: Sequence[str] = BASE) -> tuple[bool, str]:
    """Check `dependencies` (names of CHECKS) in parallel, each for at most `readiness_timeout` s.

    Returns (True, "ready") or (False, "not ready: storage is not answering; ..."); never raises.
    """
    timeout = get_settings().readiness_timeout
    with _lock:
        futures = {}
        for name in dependencies:
            running = _pending.get(name)
            if running is None or running.done():
                running = _pending[name] = _pool.submit(CHECKS[name])
            futures[name] = running
    wait(futures.values(), timeout=timeout)
    problems = []
    for name, future in futures.items():
        if not future.done():
            problems.append(f"{name} is not answering")
        elif (error := future.exception()) is not None:
            problems.append(str(error) if name == "warm" else f"{name} is down ({type(error).__name__})")
    if problems:
        return False, "not ready: " + "; ".join(problems)
    return True, "ready"


def _registry() -> CollectorRegistry:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return DEFAULT_REGISTRY


class _Handler(BaseHTTPRequestHandler):
    dependencies: tuple[str, ...] = BASE

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path == "/healthz":
            self._send(200, b"ok", "text/plain")
        elif self.path == "/readyz":
            ok, why = dependencies_ready(self.dependencies)
            self._send(200 if ok else 503, why.encode(), "text/plain")
        elif self.path == "/metrics":
            self._send(200, generate_latest(_registry()), CONTENT_TYPE_LATEST)
        else:
            self._send(404, b"not found", "text/plain")

    def do_HEAD(self) -> None:  # noqa: N802 - like GET without the body (uptime checkers use HEAD)
        self.do_GET()

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def serve_health(port: int, process: str) -> ThreadingHTTPServer | None:
    """Serve health endpoints of `process` (a key of PROCESS_DEPENDENCIES) on a daemon thread;
    port 0 disables them."""
    if not port:
        return None
    handler = type("Handler", (_Handler,), {"dependencies": PROCESS_DEPENDENCIES[process]})
    server = ThreadingHTTPServer((get_settings().health_host, port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
