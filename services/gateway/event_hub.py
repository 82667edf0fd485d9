"""One Redis pub/sub connection per gateway process, fanned out to every open event stream.

A connection per stream made Redis connections grow with the number of open browser tabs; here a
stream only adds a bounded in-memory queue. redis-py's `PubSub.run()` reads the connection in one task
and calls a handler per channel; it re-subscribes by itself after a reconnect.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import redis.asyncio as aioredis

from shared.config import get_settings

log = logging.getLogger(__name__)
QUEUE_SIZE = 64  # events a slow stream may lag behind; older ones are dropped (the row is the truth)


class EventHub:
    """Subscribers per channel, each with a bounded queue of raw message payloads (bytes)."""

    def __init__(self, url: str, **options) -> None:
        self._client = aioredis.Redis.from_url(url, **options)  # options: timeouts (shared/config.py)
        self._pubsub = self._client.pubsub()
        self._queues: dict[str, set[asyncio.Queue[bytes]]] = {}
        self._lock = asyncio.Lock()
        self._reader: asyncio.Task | None = None

    @asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[asyncio.Queue[bytes]]:
        """A queue that receives every message published on `channel` while the block runs.

        Raises redis.RedisError when Redis cannot be reached to subscribe."""
        queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=QUEUE_SIZE)
        async with self._lock:
            subscribers = self._queues.setdefault(channel, set())
            subscribers.add(queue)
            try:
                if len(subscribers) == 1:
                    await self._pubsub.subscribe(**{channel: self._deliver})
                if self._reader is None or self._reader.done():
                    self._reader = asyncio.create_task(self._pubsub.run(exception_handler=self._retry))
            except BaseException:
                self._leave(channel, queue)
                raise
        try:
            yield queue
        finally:
            async with self._lock:
                if self._leave(channel, queue):
                    try:
                        await self._pubsub.unsubscribe(channel)
                    except aioredis.RedisError:
                        pass  # gone with the connection; a reconnect re-subscribes only live channels

    def _leave(self, channel: str, queue: asyncio.Queue[bytes]) -> bool:
        """Forget `queue`; True when it was the channel's last subscriber."""
        subscribers = self._queues.get(channel, set())
        subscribers.discard(queue)
        if subscribers:
            return False
        self._queues.pop(channel, None)
        return True

    async def _deliver(self, message: dict) -> None:
        channel = message["channel"].decode()
        for queue in self._queues.get(channel, ()):
            if queue.full():
                queue.get_nowait()  # drop the oldest: a stream re-reads the row when it matters
            queue.put_nowait(message["data"])

    async def _retry(self, error: BaseException, pubsub: object) -> None:
        log.warning("event hub: Redis read failed (%s); retrying", error)
        await asyncio.sleep(1.0)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
        await self._pubsub.aclose()
        await self._client.aclose()


_hubs: dict[asyncio.AbstractEventLoop, EventHub] = {}


def hub() -> EventHub:
    """This process's hub (one per event loop)."""
    loop = asyncio.get_running_loop()
    if loop not in _hubs:
        settings = get_settings()
        _hubs[loop] = EventHub(settings.redis_url, **settings.redis_options())
    return _hubs[loop]
