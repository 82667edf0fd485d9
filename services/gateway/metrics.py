"""Request metrics as a plain ASGI middleware (Starlette's BaseHTTPMiddleware runs every request
through an extra task and stream, a large share of a short request's cost)."""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.metrics import HTTP_REQUESTS, HTTP_SECONDS

# The labelled children, by label values: prometheus_client's `labels()` checks and joins the values
# and takes a lock on every call (~2.6 us of the ~7 us a request spends on metrics, multiprocess
# mode). Bounded: route templates x methods x statuses.
_children: dict[tuple[Any, ...], Any] = {}


def _child(metric: Any, *values: Any) -> Any:
    key = (metric, *values)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*values)
    return child


class RequestMetrics:
    """Counts requests by method, route template and status (`studio_http_requests_total`) and
    observes the seconds until the response starts (`studio_http_request_seconds`): for an event
    stream that is the time to its headers, not how long the client stays."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception before the response started

        async def send_and_observe(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                _child(HTTP_SECONDS, _route(scope)).observe(time.perf_counter() - started)
            await send(message)

        try:
            await self.app(scope, receive, send_and_observe)
        finally:
            _child(HTTP_REQUESTS, scope["method"], _route(scope), status).inc()


def _route(scope: Scope) -> str:
    return getattr(scope.get("route"), "path", "unmatched")
