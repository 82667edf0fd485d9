"""Health and metrics for processes that are not web servers (workers, relay, scheduler).

`/healthz`: the process is alive. `/readyz`: it can reach Postgres and Redis. `/metrics`: Prometheus.
Celery's pool processes write metrics to PROMETHEUS_MULTIPROC_DIR; this server aggregates them.
"""

import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client import REGISTRY as DEFAULT_REGISTRY


def dependencies_ready() -> tuple[bool, str]:
    import redis
    from sqlalchemy import text

    from shared.config import get_settings
    from shared.db import get_engine

    try:
        with get_engine().connect() as conn:
            conn.execute(text("SELECT 1"))
        redis.Redis.from_url(get_settings().redis_url, socket_timeout=2).ping()
        return True, "ready"
    except Exception as e:  # readiness reports, it does not raise
        return False, f"not ready: {type(e).__name__}"


def _registry() -> CollectorRegistry:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return DEFAULT_REGISTRY


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path == "/healthz":
            self._send(200, b"ok", "text/plain")
        elif self.path == "/readyz":
            ok, why = dependencies_ready()
            self._send(200 if ok else 503, why.encode(), "text/plain")
        elif self.path == "/metrics":
            self._send(200, generate_latest(_registry()), CONTENT_TYPE_LATEST)
        else:
            self._send(404, b"not found", "text/plain")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def serve_health(port: int) -> ThreadingHTTPServer | None:
    """Serve health endpoints on a daemon thread; port 0 disables them."""
    if not port:
        return None
    server = ThreadingHTTPServer(("0.0.0.0", port), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server
