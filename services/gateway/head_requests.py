"""HEAD on every route that takes GET (RFC 9110 9.3.2: HEAD is GET without the content).

FastAPI routes answer only the methods they declare, so `HEAD /v1/me` was a 405 that named GET in
`Allow`. This middleware hands HEAD requests to the app as GET; uvicorn, which still sees the
request's own method, sends the GET's status and headers (Content-Length included) and no body.
"""

from starlette.types import ASGIApp, Receive, Scope, Send


class HeadAsGet:
    """Pure ASGI middleware: a HEAD request reaches the routes as GET."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "HEAD":
            scope = {**scope, "method": "GET"}
        await self.app(scope, receive, send)
