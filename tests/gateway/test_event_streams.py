"""Many open event streams: each gets its events, the gateway keeps answering other requests, and
neither database connections nor Redis connections grow with the number of streams."""

import asyncio
import json
import uuid

import httpx
import redis

from shared.db import session_scope
from shared.jobs import events
from shared.models import Job
from tests.conftest import Api, Platform

STREAMS = 24  # more than the database pool holds (5 + 10 overflow)


async def _first_events(url: str, token: str, job_id: str, got: list) -> None:
    """Open one stream; record the stages of its first two events in a list appended to `got`."""
    async with (
        httpx.AsyncClient(base_url=url, timeout=60) as client,
        client.stream("GET", f"/v1/jobs/{job_id}/events", params={"access_token": token}) as stream,
    ):
        assert stream.status_code == 200, await stream.aread()
        seen: list = []
        got.append(seen)
        async for line in stream.aiter_lines():
            if line.startswith("data:"):
                seen.append(json.loads(line[5:])["stage"])
                if len(seen) == 2:
                    return


def test_many_open_streams_share_the_pool_and_one_redis_connection(api: Api, platform: Platform) -> None:
    user = api.new_user()
    user_id = uuid.UUID(api.get("/v1/me", headers=user.auth).json()["id"])
    with session_scope() as session:  # a job nobody runs (no outbox row): it stays queued
        job = Job(user_id=user_id, kind="train_likeness", stage="waiting", input={})
        session.add(job)
    job_id = str(job.id)
    rc = redis.Redis.from_url(platform.stack.env()["REDIS_URL"])
    clients_before = rc.info("clients")["connected_clients"]

    async def scenario() -> tuple[list, float, int]:
        got: list = []
        tasks = [
            asyncio.create_task(_first_events(platform.url, user.access_token, job_id, got))
            for _ in range(STREAMS)
        ]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while sum(1 for seen in got if seen) < STREAMS and loop.time() < deadline:
            await asyncio.sleep(0.05)
            for t in tasks:
                if t.done() and t.exception():
                    raise t.exception()
        assert sum(1 for seen in got if seen) == STREAMS, (
            f"{sum(1 for s in got if s)} of {STREAMS} streams opened"
        )
        # Every stream open: other requests still get a database connection at once.
        started = loop.time()
        async with httpx.AsyncClient(base_url=platform.url, timeout=10) as client:
            r = await client.get(f"/v1/jobs/{job_id}", headers=user.auth)
        assert r.status_code == 200, r.text
        read_seconds = loop.time() - started
        clients_open = rc.info("clients")["connected_clients"]
        with session_scope() as session:  # one published change reaches every stream
            row = session.get(Job, uuid.UUID(job_id))
            row.stage = "halfway"
            session.flush()
            events.publish(row)
        await asyncio.wait_for(asyncio.gather(*tasks), timeout=20)
        return got, read_seconds, clients_open

    got, read_seconds, clients_open = asyncio.run(scenario())
    assert all(seen == ["waiting", "halfway"] for seen in got), got
    assert read_seconds < 2.0
    assert clients_open - clients_before <= 2, (clients_before, clients_open)  # not one per stream
