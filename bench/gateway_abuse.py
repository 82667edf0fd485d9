"""What one stranger's requests cost everyone else: a signed-in user's latency (GET /v1/me) while
the gateway is sent huge or slow request heads, or a retry whose Idempotency-Key the first request
still holds (issue #22, items 5 and 7). Baseline and new in the same run, on the same local stack:

- baseline: uvicorn's own httptools protocol (`python -m uvicorn ... --http httptools`, as
  `studio gateway` served before) and, for the key retry, `DATABASE_LOCK_TIMEOUT_MS=0` (no
  lock_timeout: the lock wait runs into the 2 s read timeout, as before);
- new: `studio gateway` (services/gateway/http_protocol.py, the lock_timeout).

Scenarios (a fresh gateway each): `idle`; `head_128mb` (one request with a 128 MB header);
`heads_4x200mb` (four at once: RSS after); `slow_heads_2000` (2,000 connections sending half a head,
then nothing: how long they are held); `key_retry` (the retry's answer, and the other users' 503s).
The other user's GETs run back to back for `--observe` seconds during each attack.

    python bench/gateway_abuse.py            # writes bench/results/gateway_abuse.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import psutil
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from shared.localstack import LocalStack, free_port, free_port_block, wait_for_port  # noqa: E402

HEAD = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"


def percentiles(samples: list[float]) -> dict:
    if not samples:
        return {"n": 0}
    ordered = sorted(samples)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)

    return {"n": len(ordered), "p50_ms": at(0.5), "p99_ms": at(0.99), "max_ms": round(ordered[-1] * 1000, 1)}


def other_user(url: str, token: str, seconds: float) -> dict:
    """GET /v1/me back to back for `seconds`: latencies and statuses (a timeout counts as 0)."""
    took, statuses = [], {}
    with httpx.Client(base_url=url, timeout=30) as client:
        stop = time.monotonic() + seconds
        while time.monotonic() < stop:
            started = time.monotonic()
            try:
                code = client.get("/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code
            except httpx.HTTPError:
                code = 0
            took.append(time.monotonic() - started)
            statuses[code] = statuses.get(code, 0) + 1
    return {**percentiles(took), "statuses": statuses}


def send_big_head(port: int, size: int, answers: list) -> None:
    """One request whose header value is `size` bytes; records (status line or error, seconds)."""
    started = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
            sock.sendall(HEAD + b"X-Big: ")
            chunk = b"a" * 2**20
            sent = 0
            while sent < size:
                sock.sendall(chunk)
                sent += len(chunk)
            sock.sendall(b"\r\n\r\n")
            answers.append((sock.recv(64).split(b"\r\n")[0].decode(), round(time.monotonic() - started, 2)))
    except OSError as e:
        answers.append((f"{type(e).__name__} after sending", round(time.monotonic() - started, 2)))


def rss_mb(pid: int) -> float:
    proc = psutil.Process(pid)
    return round(sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20, 1)


class Gateway:
    def __init__(self, kind: str, env: dict, root: Path, extra_env: dict | None = None) -> None:
        self.port = free_port()
        if kind == "baseline":
            cmd = [sys.executable, "-m", "uvicorn", "services.gateway.app:create_app", "--factory",
                   "--port", str(self.port), "--http", "httptools", "--log-level", "warning"]  # fmt: skip
        else:
            cmd = [sys.executable, "-m", "shared.cli", "gateway", "--port", str(self.port)]
        log = open(root / f"gateway-{kind}-{self.port}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            cmd,
            env={**env, **(extra_env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for_port(self.port, timeout=60, proc=self.proc)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        os.killpg(self.proc.pid, 9)
        self.proc.wait()


def sign_in(url: str) -> tuple[str, str]:
    email, password = f"bench-{uuid.uuid4().hex[:8]}@example.com", "correct horse battery"
    with httpx.Client(base_url=url, timeout=30) as api:
        assert api.post("/v1/auth/signup", json={"email": email, "password": password}).status_code == 202
        body = api.post("/v1/auth/login", json={"email": email, "password": password}).json()
        token = body["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        assert api.post("/v1/me/consent", json={"accept": True}, headers=auth).status_code == 200
        user_id = api.get("/v1/me", headers=auth).json()["id"]
        for _ in range(20):  # warm
            api.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
    return token, user_id


def big_heads(gw: Gateway, token: str, count: int, size: int, observe: float) -> dict:
    before = rss_mb(gw.proc.pid)
    answers: list = []
    senders = [
        threading.Thread(target=send_big_head, args=(gw.port, size, answers), daemon=True)
        for _ in range(count)
    ]
    for t in senders:
        t.start()
    others = other_user(gw.url, token, observe)
    for t in senders:
        t.join(timeout=1)
    return {
        "others": others,
        "attackers": answers,
        "rss_mb_before": before,
        "rss_mb_after": rss_mb(gw.proc.pid),
    }


def slow_heads(gw: Gateway, token: str, count: int, observe: float, wait: float) -> dict:
    socks = [socket.create_connection(("127.0.0.1", gw.port), timeout=wait) for _ in range(count)]
    started = time.monotonic()
    for sock in socks:
        sock.sendall(HEAD + b"X-Slow: 1")
    others = other_user(gw.url, token, observe)
    held, answers = [], {}
    deadline = started + wait
    for sock in socks:
        try:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = sock.recv(64)
            line = data.split(b"\r\n")[0].decode() or "closed"
        except OSError:
            line = "still open"
        answers[line] = answers.get(line, 0) + 1
        held.append(time.monotonic() - started)
        sock.close()
    return {
        "others": others,
        "answers": answers,
        "answered_within_s": round(max(held), 1),
        "waited_up_to_s": wait,
    }


def key_retry(gw: Gateway, token: str, user_id: str, observe: float) -> dict:
    """Hold the key's advisory lock as a first upload would; send the retry; others meanwhile."""
    import psycopg

    from shared.config import get_settings
    from shared.jobs.outbox import idempotency_lock_name

    dsn = get_settings().database_url.replace("postgresql+psycopg://", "postgresql://")
    key = f"bench-{uuid.uuid4().hex[:6]}"
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
            [idempotency_lock_name(uuid.UUID(user_id), key)],
        )
        result: dict = {}

        def others() -> None:
            result["others"] = other_user(gw.url, token, observe)

        t = threading.Thread(target=others)
        t.start()
        time.sleep(0.3)
        started = time.monotonic()
        photo = io.BytesIO()
        Image.effect_noise((256, 256), 64).convert("RGB").save(photo, "JPEG")
        files = [("files", ("a.jpg", photo.getvalue(), "image/jpeg"))]
        r = httpx.post(f"{gw.url}/v1/photos", files=files, timeout=30,
                       headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key})  # fmt: skip
        result["retry"] = {
            "status": r.status_code,
            "seconds": round(time.monotonic() - started, 2),
            "detail": r.json().get("detail"),
        }
        t.join()
        conn.rollback()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--observe", type=float, default=8.0, help="seconds of the other user's GETs per attack"
    )
    parser.add_argument("--slow", type=int, default=2000, help="slow-head connections")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "gateway_abuse.json"))
    parser.add_argument("--only", default="", help="comma-separated scenarios (default: all)")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="studio-abuse-"))
    root.chmod(0o755)
    stack = LocalStack(root, base_port=free_port_block(6)).start()
    limits = {"AUTH_RATE_LIMIT": "1000/minute", "UPLOAD_RATE_LIMIT": "1000/minute"}
    env = {
        **os.environ,
        **stack.env(),
        **limits,
        "HEALTH_PORT": "0",
        "LOG_JSON": "false",
        "PYTHONPATH": str(REPO),
    }
    os.environ.update(stack.env())
    subprocess.run([sys.executable, "-m", "shared.cli", "migrate"], env=env, check=True, capture_output=True)
    results: dict = {"machine": f"{platform.node()} {os.cpu_count()} cores", "observe_s": args.observe}
    try:
        for kind in ("baseline", "new"):
            runs: dict = {}
            scenarios = {
                "idle": lambda gw, tok, uid: {"others": other_user(gw.url, tok, args.observe)},
                "head_128mb": lambda gw, tok, uid: big_heads(gw, tok, 1, 128 * 2**20, args.observe),
                "heads_4x200mb": lambda gw, tok, uid: big_heads(gw, tok, 4, 200 * 2**20, args.observe),
                "slow_heads": lambda gw, tok, uid: slow_heads(gw, tok, args.slow, args.observe, 30.0),
                "key_retry": lambda gw, tok, uid: key_retry(gw, tok, uid, args.observe),
            }
            for name, scenario in scenarios.items():
                if args.only and name not in args.only.split(","):
                    continue
                extra = {"DATABASE_LOCK_TIMEOUT_MS": "0"} if kind == "baseline" else {}
                gw = Gateway(kind, env, root, extra)
                try:
                    token, user_id = sign_in(gw.url)
                    runs[name] = scenario(gw, token, user_id)
                finally:
                    gw.stop()
                print(kind, name, json.dumps(runs[name]), flush=True)
            results[kind] = runs
    finally:
        stack.stop()
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
