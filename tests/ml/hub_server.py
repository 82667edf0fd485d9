"""Real HTTP servers in the layout the model hub and GitHub releases use, for `studio models pull`.

- hub: `/{repo}/resolve/{revision}/{path}` with the headers huggingface_hub's file_download.py
  reads: `X-Repo-Commit`, `ETag`, `Content-Length`; an LFS file (weights) answers `302` to the
  CDN with `X-Linked-Etag` (its sha256) and `X-Linked-Size`, as huggingface.co does.
- cdn: `/blobs/{sha256}`, another origin (port), so the client must not send the token there.
- github: `/{owner}/{repo}/releases/download/{tag}/{name}` -> `302` to `/assets/{name}`.
Every server honours `Range: bytes=N-` (206), can cut a transfer once mid-body (then closes the
socket), and logs each request's method, path, Authorization and Range headers.
"""

from __future__ import annotations

import hashlib
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LFS_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".ckpt")


@dataclass
class Upstream:
    """What the servers serve; tests change it between pulls (a re-upload at `main`, a bad byte)."""

    hub: dict[tuple[str, str, str], bytes] = field(default_factory=dict)  # (repo, revision, path)
    releases: dict[str, bytes] = field(default_factory=dict)  # asset name -> bytes
    cut_once: set[str] = field(default_factory=set)  # file names whose next GET is cut mid-body
    log: list[dict] = field(default_factory=list)
    urls: dict[str, str] = field(default_factory=dict)  # server role -> base URL
    lock: threading.Lock = field(default_factory=threading.Lock)

    def blob(self, sha: str) -> bytes | None:
        return next((b for b in self.hub.values() if hashlib.sha256(b).hexdigest() == sha), None)

    def requests(self, role: str) -> list[dict]:
        return [r for r in self.log if r["server"] == role]


def commit_of(revision: str) -> str:
    """The commit id a revision resolves to (a branch name gets a stable made-up id)."""
    if re.fullmatch(r"[0-9a-f]{40}", revision):
        return revision
    return hashlib.sha1(revision.encode()).hexdigest()


def _handler(role: str, upstream: Upstream) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep test output quiet
            pass

        def do_HEAD(self) -> None:
            self._route(head=True)

        def do_GET(self) -> None:
            self._route(head=False)

        def _route(self, head: bool) -> None:
            with upstream.lock:
                upstream.log.append(
                    {
                        "server": role,
                        "method": self.command,
                        "path": self.path,
                        "auth": self.headers.get("Authorization"),
                        "range": self.headers.get("Range"),
                    }
                )
            if role == "hub":
                self._hub(head)
            elif role == "cdn":
                data = upstream.blob(self.path.removeprefix("/blobs/"))
                self._bytes(data, self.path.rsplit("/", 1)[-1], head) if data else self._missing()
            else:
                self._github(head)

        def _hub(self, head: bool) -> None:
            m = re.fullmatch(r"/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)", self.path)
            data = m and upstream.hub.get((m["repo"], m["rev"], m["path"]))
            if data is None:
                return self._missing(entry=True)
            commit = {"X-Repo-Commit": commit_of(m["rev"])}
            if m["path"].endswith(LFS_SUFFIXES):
                sha = hashlib.sha256(data).hexdigest()
                self.send_response(302)
                headers = {
                    **commit,
                    "Location": f"{upstream.urls['cdn']}/blobs/{sha}",
                    "ETag": f'"{hashlib.sha1(sha.encode()).hexdigest()}"',  # the LFS pointer's
                    "X-Linked-Etag": f'"{sha}"',
                    "X-Linked-Size": str(len(data)),
                    "Content-Length": "0",
                }
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                return None
            etag = f'"{hashlib.sha1(data).hexdigest()}"'  # a git blob id, as for small files
            return self._bytes(data, m["path"], head, {**commit, "ETag": etag})

        def _github(self, head: bool) -> None:
            if m := re.fullmatch(r"/[^/]+/[^/]+/releases/download/[^/]+/(?P<name>[^/]+)", self.path):
                if m["name"] not in upstream.releases:
                    return self._missing()
                self.send_response(302)
                self.send_header("Location", f"/assets/{m['name']}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return None
            name = self.path.removeprefix("/assets/")
            data = upstream.releases.get(name)
            return self._bytes(data, name, head) if data is not None else self._missing()

        def _bytes(self, data: bytes, name: str, head: bool, extra: dict | None = None) -> None:
            start = 0
            if (r := self.headers.get("Range")) and (m := re.fullmatch(r"bytes=(\d+)-", r)):
                start = int(m[1])
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
            body = data[start:]
            self.send_response(206 if start else 200)
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(len(body)))
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            if head:
                return
            with upstream.lock:
                cut = name.rsplit("/", 1)[-1] in upstream.cut_once and len(body) > 1
                if cut:
                    upstream.cut_once.discard(name.rsplit("/", 1)[-1])
            if cut:  # a connection that breaks mid-transfer: half the body, then the socket closes
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
                self.close_connection = True
                return
            self.wfile.write(body)

        def _missing(self, entry: bool = False) -> None:
            self.send_response(404)
            if entry:
                self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Handler


class Servers:
    """The hub, its CDN and a GitHub-style release server, on free ports of 127.0.0.1."""

    def __init__(self, upstream: Upstream):
        self.upstream = upstream
        self._httpds = []
        for role in ("hub", "cdn", "github"):
            httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(role, upstream))
            threading.Thread(target=httpd.serve_forever, daemon=True).start()
            self._httpds.append(httpd)
            upstream.urls[role] = f"http://127.0.0.1:{httpd.server_address[1]}"

    def close(self) -> None:
        for httpd in self._httpds:
            httpd.shutdown()
            httpd.server_close()
