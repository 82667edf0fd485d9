"""Request metrics as a plain ASGI middleware (Starlette's BaseHTTPMiddleware runs every request
through an extra task and stream, a large share of a short request's cost)."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.metrics import HTTP_REQUESTS, HTTP_SECONDS


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
                HTTP_SECONDS.labels(_route(scope)).observe(time.perf_counter() - started)
            await send(message)

        try:
            await self.app(scope, receive, send_and_observe)
        finally:
            HTTP_REQUESTS.labels(scope["method"], _route(scope), status).inc()


def _route(scope: Scope) -> str:
    return getattr(scope.get("route"), "path", "unmatched")
