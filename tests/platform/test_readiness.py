"""`/readyz` says not ready while S3 refuses writes (a full disk: SeaweedFS answers reads and
InternalError to every PUT), through a write probe at most every READINESS_WRITE_PROBE_SECONDS,
and ready again once writes work (issue #22, item 10). A real gateway behind tests/s3_faults.py."""

import os
import time

import httpx

from shared.localstack import free_port, wait_for_port
from tests.conftest import Processes, wait_until
from tests.s3_faults import FaultyS3


def test_readyz_is_not_ready_while_storage_refuses_writes(stack, procs: Processes) -> None:
    with FaultyS3(os.environ["S3_ENDPOINT_URL"]) as s3:
        port = free_port()
        env = {"S3_ENDPOINT_URL": s3.url, "READINESS_WRITE_PROBE_SECONDS": "2"}
        procs.start("gateway-full-disk", "gateway", "--port", str(port), env=env)
        wait_for_port(port, timeout=60)
        ready = f"http://127.0.0.1:{port}/readyz"
        wait_until(lambda: httpx.get(ready, timeout=5).status_code == 200, timeout=60, what="ready")
        with s3.failing_puts(500, "InternalError"):
            started = time.monotonic()
            r = wait_until(
                lambda: (r := httpx.get(ready, timeout=5)).status_code == 503 and r,
                timeout=30,
                what="not ready",
            )
            assert time.monotonic() - started <= 2 + 2, "not ready only after more than one probe interval"
            assert r.text == "not ready: storage is down (ClientError)", r.text
            assert s3.puts_failed >= 1
            # Rate-limited: between probes (a fifth of the interval while failing) the last answer
            # stands. 20 asks in about 2 s write at most 2 / 0.4 + 1 probes.
            failed, asked = s3.puts_failed, time.monotonic()
            for _ in range(20):
                assert httpx.get(ready, timeout=5).status_code == 503
                time.sleep(0.1)
            assert s3.puts_failed - failed <= (time.monotonic() - asked) / 0.4 + 1, s3.puts_failed - failed
        wait_until(lambda: httpx.get(ready, timeout=5).status_code == 200, timeout=10, what="ready again")
