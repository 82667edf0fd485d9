"""Limits on request bodies, as a plain ASGI middleware around `receive`: their size and how long the
gateway waits for them.

- Size: a body over `json_body_max_bytes` (64 KiB: every JSON body of the API is far smaller) is
  refused with 413 and a sentence; from `Content-Length` before a byte is read (so no `100 Continue`
  is sent), else as soon as the chunks read (chunked, or a false length) pass the limit: at most the
  limit plus one chunk is ever held. Routes that take files (multipart uploads) are exempt: they read
  each file with its own cap (`upload_max_bytes`, see routes/photos.py), as FastAPI's `Form` rule says.
- Time: a client that sends the headers and then stalls gets 408 and a sentence once no part of its
  body arrived for `request_body_timeout` seconds (the idle timeout between reads, as nginx's
  `client_body_timeout`; uvicorn has none, only `timeout_keep_alive` between requests). Once the body
  is in, `receive` waits as long as the app wants (an event stream waits for the disconnect).

Not Starlette's `RequestBodyLimitMiddleware`: it answers a fixed plain-text "Content Too Large" (no
sentence of ours) and has no read timeout. Both answers close the connection (`Connection: close`):
the rest of the body is not read.
"""

import asyncio

from fastapi import params
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.config import get_settings

CLOSE = {"Connection": "close"}


def too_large(limit: int) -> HTTPException:
    return HTTPException(
        413, f"The request body is larger than the {limit // 1024} KiB this API accepts.", CLOSE
    )


def too_slow(seconds: float) -> HTTPException:
    return HTTPException(
        408, f"The request body did not arrive within {seconds:g} seconds; please send it again.", CLOSE
    )


def takes_files(scope: Scope) -> bool:
    """Whether the matched route reads a form (multipart upload); FastAPI's own test (`is_body_form`
    in fastapi/routing.py). The router sets `scope["route"]` before the endpoint reads the body."""
    body = getattr(scope.get("route"), "body_field", None)
    return body is not None and isinstance(body.field_info, params.Form)


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
        s = get_settings()
        limit, timeout = s.json_body_max_bytes, s.request_body_timeout
        received = 0
        complete = False

        async def limited() -> Message:
            nonlocal received, complete
            if complete:  # the body is in: what follows is the disconnect, however late
                return await receive()
            limited_size = not takes_files(scope)
            if received == 0 and limited_size:
                length = Headers(scope=scope).get("content-length", "")
                if length.isdigit() and int(length) > limit:
                    raise too_large(limit)
            try:
                message = await asyncio.wait_for(receive(), timeout)
            except TimeoutError:
                raise too_slow(timeout) from None
            if message["type"] != "http.request":  # http.disconnect
                complete = True
                return message
            received += len(message.get("body", b""))
            complete = not message.get("more_body", False)
            if limited_size and received > limit:
                raise too_large(limit)
            return message

        await self.app(scope, limited, send)
