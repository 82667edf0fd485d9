"""Every process of `studio gateway --workers N` logs as the product configures it: JSON lines with
secrets redacted. uvicorn's worker processes are spawned, so they start without the parent's
handlers; before `log_config=logging_config(...)` they wrote no access log and no JSON at all."""

import json
import re
from pathlib import Path

import httpx

from shared.localstack import free_port, wait_for_port
from tests.conftest import Processes, wait_until

SECRET = "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0.c2lnbmF0dXJlLXRoYXQtbXVzdC1uZXZlci1iZS1sb2dnZWQ"


def _json_lines(log: Path) -> list[dict]:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.startswith("{")]
    return [json.loads(line) for line in lines]


def test_each_worker_process_logs_json_and_redacts_tokens(procs: Processes) -> None:
    port = free_port()
    gateway = procs.start(
        "gateway-two-processes", "gateway", "--port", str(port), "--workers", "2", env={"LOG_JSON": "true"}
    )
    wait_for_port(port, timeout=60)
    log = Path(gateway.log_path)  # type: ignore[attr-defined]
    # Each worker process says it started, at INFO: only a configured process writes that line.
    started = lambda: {  # noqa: E731
        m.group(1)
        for line in _json_lines(log)
        if (m := re.fullmatch(r"Started server process \[(\d+)\]", line["message"]))
    }
    assert len(wait_until(lambda: len(started()) == 2 and started(), timeout=30, what="two workers")) == 2

    for _ in range(20):  # new connections, served by either process
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            r = client.get(
                "/v1/me", params={"access_token": SECRET}, headers={"Authorization": f"Bearer {SECRET}"}
            )
            assert r.status_code == 401

    access = lambda: [line for line in _json_lines(log) if line["name"] == "uvicorn.access"]  # noqa: E731
    wait_until(lambda: len(access()) >= 20, what="an access line per request")
    assert all(line["service"] == "gateway" for line in access())
    assert "GET /v1/me?access_token=[redacted] HTTP/1.1" in access()[0]["message"]
    text = log.read_text(errors="replace")
    assert SECRET not in text and SECRET.split(".")[2] not in text
    # No request line bypassed the JSON handler (Python's warnings go to stderr as plain text).
    plain = [line for line in text.splitlines() if line.strip() and not line.startswith("{")]
    assert not [line for line in plain if "/v1/" in line], plain
