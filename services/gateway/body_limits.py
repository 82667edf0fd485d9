"""Limits on request bodies, as a plain ASGI middleware around `receive`: their size and how long the
gateway waits for them.

- Size: a body over `json_body_max_bytes` (64 KiB: every JSON body of the API is far smaller) is
  refused with 413 and a sentence; from `Content-Length` before a byte is read (so no `100 Continue`
  is sent), else as soon as the chunks read (chunked, or a false length) pass the limit: at most the
  limit plus one chunk is ever held. Routes that take files (multipart uploads) have the larger
  `upload_limit()` (every file at its own cap), and refuse a caller without a valid access token
  (401) before reading a byte: FastAPI parses a form before the dependencies that check the caller.
- Time: a client that sends the headers and then stalls gets 408 and a sentence once no part of its
  body arrived for `request_body_timeout` seconds (the idle timeout between reads, as nginx's
  `client_body_timeout`; uvicorn has none, only `timeout_keep_alive` between requests). Once the body
  is in, `receive` waits as long as the app wants (an event stream waits for the disconnect).

An answer sent before the body was read whole (a refusal from the headers: 401, 403 no consent, 429,
a file over its cap) closes the connection too, so that the client stops sending.

Not Starlette's `RequestBodyLimitMiddleware`: it answers a fixed plain-text "Content Too Large" (no
sentence of ours) and has no read timeout. Both answers close the connection (`Connection: close`):
the rest of the body is not read.
"""

import asyncio

from fastapi import params
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.gateway.api.language import Refusal
from shared.config import get_settings
from shared.security import decode_access_token

CLOSE = {"Connection": "close"}
NOT_SIGNED_IN = Refusal(401, "auth.login_again", headers={"WWW-Authenticate": "Bearer", **CLOSE})
NO_TOKEN = Refusal(401, "auth.sign_in", headers={"WWW-Authenticate": "Bearer", **CLOSE})


def too_large(limit: int) -> Refusal:
    size = f"{limit // 2**20} MiB" if limit >= 2**20 else f"{limit // 1024} KiB"
    return Refusal(413, "request.too_large", headers=CLOSE, size=size)


def upload_too_large() -> Refusal:
    """413 for an upload request over `upload_limit()`, in the limits a person chooses photos by
    (the byte total would read like a cap of its own)."""
    s = get_settings()
    return Refusal(
        413,
        "upload.request_too_large",
        headers=CLOSE,
        files=s.upload_max_files,
        mb=f"{s.upload_max_bytes / 2**20:.0f}",
    )


def upload_limit() -> int:
    """Bytes an upload request may hold: the most files, each at its cap, plus 1 MiB of multipart
    framing (part headers, boundaries). Each file still meets its own cap in the route."""
    s = get_settings()
    return s.upload_max_files * s.upload_max_bytes + 2**20


def not_signed_in(scope: Scope) -> Refusal | None:
    """None for a valid, unexpired access token in `Authorization: Bearer` (signature and expiry
    only: the route's CurrentUser still checks the account); else the 401 to answer, as the route's
    would: `auth.sign_in` without a bearer token, `auth.login_again` for one that is not valid. Lets
    an upload be refused before its body is read: FastAPI reads a form before it resolves the
    dependencies that check the caller."""
    scheme, _, token = Headers(scope=scope).get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return NO_TOKEN
    return None if decode_access_token(token.strip()) is not None else NOT_SIGNED_IN


def too_slow(seconds: float) -> Refusal:
    return Refusal(408, "request.too_slow", headers=CLOSE, seconds=f"{seconds:g}")


def takes_files(scope: Scope) -> bool:
    """Whether the matched route reads a form: one with a form parameter (FastAPI's own test,
    `is_body_form` in fastapi/routing.py), or an upload route that reads its files itself after its
    checks (its `openapi_extra` documents a multipart body: services/gateway/uploads.py). The router
    sets `scope["route"]` before the endpoint reads the body."""
    route = scope.get("route")
    body = getattr(route, "body_field", None)
    if body is not None and isinstance(body.field_info, params.Form):
        return True
    extra = getattr(route, "openapi_extra", None) or {}
    return "multipart/form-data" in extra.get("requestBody", {}).get("content", {})


class RequestBodyLimits:
    """Wraps `receive`: 413 past `json_body_max_bytes`, 408 after `request_body_timeout` s of silence.

    The refusals are HTTPExceptions raised where the endpoint reads the body (FastAPI re-raises them
    from its body parsing), so they answer like every other error: `{"detail": sentence}`.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        timeout = get_settings().request_body_timeout
        limit = 0  # set at the first read: only then has the router matched the route
        over: Refusal | None = None  # the 413 for this route, set with `limit`
        received = 0
        complete = False

        async def limited() -> Message:
            nonlocal received, complete, limit, over
            if complete:  # the body is in: what follows is the disconnect, however late
                return await receive()
            if received == 0:
                files = takes_files(scope)
                limit = upload_limit() if files else get_settings().json_body_max_bytes
                over = upload_too_large() if files else too_large(limit)
                if files and (refusal := not_signed_in(scope)):  # nobody's 300 MB is read into a temp file
                    raise refusal
                length = Headers(scope=scope).get("content-length", "")
                if length.isdigit() and int(length) > limit:
                    raise over
            try:
                message = await asyncio.wait_for(receive(), timeout)
            except TimeoutError:
                raise too_slow(timeout) from None
            if message["type"] != "http.request":  # http.disconnect
                complete = True
                return message
            received += len(message.get("body", b""))
            complete = not message.get("more_body", False)
            if received > limit and over is not None:
                raise over
            return message

        headers = Headers(scope=scope)
        length = headers.get("content-length", "0")
        has_body = (length.isdigit() and int(length) > 0) or "chunked" in headers.get("transfer-encoding", "")

        async def closing(message: Message) -> None:
            # Answered before the body was read (401, 403, 429, a file over its cap ...): close the
            # connection after the answer, or uvicorn would go on reading the rest of it to reuse it.
            if message["type"] == "http.response.start" and has_body and not complete:
                sent = list(message.get("headers", []))
                if not any(name.lower() == b"connection" for name, _ in sent):
                    message = {**message, "headers": [*sent, (b"connection", b"close")]}
            await send(message)

        await self.app(scope, limited, closing)
