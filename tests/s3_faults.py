"""A real HTTP proxy in front of the test SeaweedFS that makes S3 answer 5xx on demand (like toxiproxy,
but at the HTTP layer): it forwards every request unchanged (the Host header too, so SigV4 signatures
still verify at SeaweedFS) and, while a fault is set, answers PUTs itself with an S3 error document
(503 SlowDown, 500 InternalError ...) after reading their body, as a store whose disk is full does;
or answers multi-object deletes 200 with every key listed under <Error> and nothing deleted, as AWS
S3 does under load (DeleteObjects never fails as a whole for per-key problems)."""

import http.client
import os
import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit
from xml.sax.saxutils import escape

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "expect", "proxy-connection", "te", "upgrade"}


@dataclass
class Fault:
    status: int  # 500, 503 ...
    code: str  # S3 error code: InternalError, SlowDown, ServiceUnavailable
    after: int = 0  # PUTs forwarded before the fault starts answering


class FaultyS3:
    """`with FaultyS3(upstream) as proxy:` serves on `proxy.url`; `proxy.failing_puts(...)` sets a fault."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.fault: Fault | None = None
        self.puts_forwarded = 0
        self.puts_failed = 0
        self.delete_code: str | None = None  # set: multi-object deletes delete nothing, per-key errors
        self.delete_only: str | None = None
        self.deletes_refused = 0
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "FaultyS3":
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    @contextmanager
    def failing_puts(self, status: int, code: str, after: int = 0) -> Iterator[None]:
        """PUTs answer `status` with S3 error `code` inside the block (the first `after` still pass)."""
        with self._lock:
            self.fault, self.puts_forwarded, self.puts_failed = Fault(status, code, after), 0, 0
        try:
            yield
        finally:
            with self._lock:
                self.fault = None

    @contextmanager
    def failing_deletes(self, code: str = "InternalError", only: str | None = None) -> Iterator[None]:
        """Multi-object deletes inside the block answer 200 listing every key under <Error> with
        S3 error `code` (InternalError, SlowDown, AccessDenied ...) and delete nothing. With `only`,
        the request goes to S3 (every key is deleted) and the answer lists under <Error> the keys
        that contain `only`: what the client is told is what a partial failure tells it."""
        with self._lock:
            self.delete_code, self.delete_only, self.deletes_refused = code, only, 0
        try:
            yield
        finally:
            with self._lock:
                self.delete_code = None

    def _refused_delete(self, method: str, query: str, body: bytes) -> tuple[str, list[bytes], bool] | None:
        """(code, keys to report undeleted, forward the request first) for a multi-object delete."""
        with self._lock:
            if self.delete_code is None or method != "POST" or not re.search(r"(^|&)delete(=|&|$)", query):
                return None
            keys = re.findall(rb"<Key>(.*?)</Key>", body)
            only = self.delete_only
            if only is not None:
                keys = [k for k in keys if only.encode() in k]
            self.deletes_refused += len(keys)
            return self.delete_code, keys, only is not None

    def _should_fail(self, method: str) -> Fault | None:
        with self._lock:
            if method != "PUT" or self.fault is None:
                return None
            if self.puts_forwarded < self.fault.after:
                self.puts_forwarded += 1
                return None
            self.puts_failed += 1
            return self.fault

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive and `Expect: 100-continue`, as S3 clients use

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                fault = proxy._should_fail(self.command)
                if fault is not None:
                    self._error(fault)
                    return
                refused = proxy._refused_delete(self.command, urlsplit(self.path).query, body)
                if refused is not None:
                    code, keys, forward = refused
                    if forward:
                        self._forward(body)
                    self._delete_result(code, keys)
                    return
                response, data = self._forward(body)
                self.send_response(response.status, response.reason)
                for key, value in response.getheaders():
                    if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _forward(self, body: bytes) -> tuple[http.client.HTTPResponse, bytes]:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                upstream = http.client.HTTPConnection(*proxy.upstream, timeout=30)
                try:
                    upstream.request(self.command, self.path, body=body or None, headers=headers)
                    response = upstream.getresponse()
                    return response, response.read()
                finally:
                    upstream.close()

            def _error(self, fault: Fault) -> None:
                body = (
                    '<?xml version="1.0" encoding="UTF-8"?>\n'
                    f"<Error><Code>{fault.code}</Code><Message>injected by the test proxy</Message>"
                    f"<Resource>{self.path}</Resource><RequestId>{uuid.uuid4().hex}</RequestId></Error>"
                ).encode()
                self.send_response(fault.status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _delete_result(self, code: str, keys: list[bytes]) -> None:
                errors = "".join(
                    f"<Error><Key>{escape(k.decode())}</Key><Code>{code}</Code>"
                    "<Message>injected by the test proxy</Message></Error>"
                    for k in keys
                )
                body = (
                    '<?xml version="1.0" encoding="UTF-8"?>\n'
                    f'<DeleteResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">{errors}</DeleteResult>'
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay  # noqa: N815 - http.server's naming

            def log_message(self, *args: object) -> None:
                pass

        return Handler


@contextmanager
def storage_through(url: str) -> Iterator[None]:
    """This process's `shared.storage` talks to `url` (a FaultyS3) inside the block."""
    from shared import storage
    from shared.config import get_settings

    saved = os.environ["S3_ENDPOINT_URL"]
    os.environ["S3_ENDPOINT_URL"] = url
    get_settings.cache_clear()
    storage.client.cache_clear()
    try:
        yield
    finally:
        os.environ["S3_ENDPOINT_URL"] = saved
        get_settings.cache_clear()
        storage.client.cache_clear()
