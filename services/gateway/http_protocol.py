"""uvicorn's httptools protocol with bounds on the request head: its size (431) and how long it takes (408).

uvicorn bounds neither when it parses with httptools (its default with `uvicorn[standard]`): httptools
joins the pieces of a header value with `bytes +=` until the line ends, so one 128 MB header held the
event loop ~20 s (quadratic copying) and four of 200 MB left +340 MB of RSS; and a connection that sends
its headers slowly is held as long as the client likes (the keep-alive timer only runs between
requests). uvicorn's own bound, `h11_max_incomplete_event_size`, exists only for the pure-Python h11
parser (slower on every request) and answers 400; it has no setting for the time the head may take.

- Size: once the bytes of a head that has not ended pass `request_header_max_bytes`, the answer is
  431 (RFC 6585 section 5) with a sentence; httptools never holds more than that plus one read.
- Time: a head not complete `request_header_timeout` seconds after the connection opened (or after
  the first byte of a later request on a kept-alive connection) gets 408 with a sentence; a connection
  that sent nothing at all is just closed, as the keep-alive timer does. Like Go's
  `ReadHeaderTimeout`, nginx's `client_header_timeout` and Node's `headersTimeout`.

Both answers close the connection after a short lingering close (nginx's `lingering_close`): what the
client still sends for up to `LINGER_SECONDS` is read and dropped, so that it reads the answer instead of
a TCP reset. Served through `uvicorn.run(http=...)` (shared/cli.py `studio gateway`).
"""

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from shared.config import get_settings

LINGER_SECONDS = 2.0
REASONS = {400: b"Bad Request", 408: b"Request Timeout", 431: b"Request Header Fields Too Large"}
# httptools could not parse the request (a negative or huge Content-Length, both Content-Length and
# Transfer-Encoding, TLS sent to the plain port): uvicorn answered it in plain text.
NOT_HTTP = "The request is not valid HTTP/1.1 and could not be read; please check how it is sent."


def _size(limit: int) -> str:
    return f"{limit // 2**20} MiB" if limit >= 2**20 else f"{limit // 1024} KiB"


def head_too_large(limit: int) -> str:
    return f"The request headers are larger than the {_size(limit)} this API accepts."


def head_too_slow(seconds: float) -> str:
    return f"The request headers did not arrive within {seconds:g} seconds; please send the request again."


class CoalescingTransport:
    """The connection's transport, with the writes of one step of the event loop sent as one.

    uvicorn writes an answer's head and its body separately; on uvloop each `write` is a `send(2)`
    at once, so a small JSON answer costs two system calls and two TCP segments. Held here until the
    loop's next round (`call_soon`), they go out together. `close` sends what is held first; every
    other attribute is the transport's own."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self.loop = loop
        self.held: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self.held:
            self.loop.call_soon(self.flush)
        self.held.append(data)

    def flush(self) -> None:
        if self.held:
            data = b"".join(self.held) if len(self.held) > 1 else self.held[0]
            self.held = []
            if not self.transport.is_closing():
                self.transport.write(data)

    def close(self) -> None:
        self.flush()
        self.transport.close()

    def get_write_buffer_size(self) -> int:
        return self.transport.get_write_buffer_size() + sum(map(len, self.held))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol` that answers 431 past `request_header_max_bytes` bytes of request head and
    408 when the head takes longer than `request_header_timeout` seconds (settings)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        s = get_settings()
        self.head_max_bytes = s.request_header_max_bytes
        self.head_timeout = s.request_header_timeout
        self.head_bytes = 0  # bytes read since the head began (at most one read too many: see above)
        self.reading_head = True  # from the connection (or a request's first byte) to its headers' end
        self.head_timer: asyncio.TimerHandle | None = None
        self.refused = False  # answered 431/408: the rest is read and dropped until the close

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
        self.head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        if self.reading_head:
            # Counted before parsing, up to the head's end when it is in this read: a whole head of
            # 40-130 KB arrives in one read on loopback and used to be parsed, and served, before
            # any count was looked at.
            end = data.find(b"\r\n\r\n")
            self.head_bytes += len(data) if end < 0 else end + 4
            if self.head_bytes > self.head_max_bytes and not self.transport.is_closing():
                self._refuse(431, head_too_large(self.head_max_bytes))
                return
        super().data_received(data)

    # httptools callbacks
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.reading_head = True
        if self.head_timer is None:
            self.head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def on_headers_complete(self) -> None:
        self.reading_head = False
        self.head_bytes = 0
        self._cancel_head_timer()
        super().on_headers_complete()

    # the bounds
    def _cancel_head_timer(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _head_timed_out(self) -> None:
        self.head_timer = None
        if not self.reading_head or self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a pipelined head behind a running request: that request's own bounds apply
        if self.head_bytes == 0:  # opened and never used: close quietly, as the keep-alive timer does
            self.transport.close()
            return
        self._refuse(408, head_too_slow(self.head_timeout))

    def _refuse(self, status: int, sentence: str) -> None:
        """Answer `status` with `{"detail": sentence}`, then close after a lingering read."""
        self.refused = True
        self._cancel_head_timer()
        self._unset_keepalive_if_required()
        body = json.dumps({"detail": sentence}).encode()
        head = [b"HTTP/1.1 %d %s\r\n" % (status, REASONS[status])]
        head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"connection: close\r\n\r\n",
        ]
        self.logger.warning("%s: %s", status, sentence)
        self.transport.write(b"".join(head) + body)
        self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a request httptools cannot parse, as JSON `{"detail": sentence}`
        like every other error of the API (uvicorn's own is `text/plain`). While an answer is still
        under way on the connection (a broken chunk mid-body, a request pipelined behind a stream),
        the connection is closed as uvicorn does: a 400 written there would land inside that answer."""
        if self.cycle is not None and not self.cycle.response_complete:
            self.transport.close()
            return
        self._refuse(400, NOT_HTTP)

    def eof_received(self) -> None:
        if self.refused:  # the client stopped sending: nothing more to drop
            self.transport.close()
        super().eof_received()
