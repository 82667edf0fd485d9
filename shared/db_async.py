"""The gateway's async pool for its one-statement signed-in reads (services/gateway/api/reads.py):
psycopg 3's `AsyncConnection` in `psycopg_pool.AsyncConnectionPool`, on the event loop, so a read
costs no trip to a worker thread (bench/gateway_cpu.py: ~650 us of CPU per read instead of ~1,500).

The same bounds as the sync engine (shared/db.py, README "Timeouts"): `DeadlineAsyncConnection`
bounds every wait for the server by `database_read_timeout` and shares the sync side's "the server
just did not answer" window, in which reads fail at once; a connection idle longer than
`database_ping_idle_seconds` is pinged first and, when a restart broke it, replaced by another;
`database_pool_timeout` bounds the wait for a free connection (`psycopg_pool.PoolTimeout`). Every
failure is a `psycopg.OperationalError`, which services/gateway/outages.py answers with the 503.

One pool per process and event loop, made on first use (uvicorn's worker processes are spawned),
`db_read_pool_size` connections at most; `close_read_pool()` on the app's shutdown.
"""

import asyncio
import time
from typing import Any

import psycopg
from psycopg.rows import namedtuple_row
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import ClauseElement
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.engine import make_url

from shared import db
from shared.config import get_settings


class DeadlineAsyncConnection(psycopg.AsyncConnection[Any]):
    """`db.DeadlineConnection` for asyncio: a wait for the server longer than `read_timeout` closes
    the connection and opens the "not answering" window of shared/db.py."""

    read_timeout: float | None = None
    returned_at = 0.0  # monotonic time it last went back to the pool (or was made)

    async def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:  # type: ignore[override]
        limit = timeout if timeout is not None else self.read_timeout
        try:
            return await super().wait(gen, interval=interval, timeout=limit)
        except psycopg.errors._WaitTimeout:  # noqa: SLF001 - psycopg's documented wait timeout
            if timeout is not None:  # the caller asked for this timeout and handles it
                raise
            self.pgconn.finish()
            db._mark_unanswered(limit or 0.0)  # noqa: SLF001 - one window for both sides
            raise psycopg.OperationalError(db.NOT_ANSWERING.format(limit)) from None

    @classmethod
    async def connect(cls, conninfo: str = "", **kwargs: Any) -> "DeadlineAsyncConnection":  # type: ignore[override]
        db.raise_if_not_answering()
        try:
            return await super().connect(conninfo, **kwargs)  # type: ignore[return-value]
        except psycopg.errors.ConnectionTimeout:
            db._mark_unanswered(cls.read_timeout or 0.0)  # noqa: SLF001
            raise


async def _stamp_idle_start(conn: DeadlineAsyncConnection) -> None:
    """Record (monotonic seconds) when `conn` starts idling: the pool's `configure` hook (just
    connected: no ping before its first use) and its `reset` hook (back in the pool). A read pings a
    connection idle longer than `database_ping_idle_seconds` since this time."""
    conn.returned_at = time.monotonic()


_pool: "AsyncConnectionPool[DeadlineAsyncConnection] | None" = None
_loop: asyncio.AbstractEventLoop | None = None
_SQL: dict[int, str] = {}  # id(statement) -> its SQL for psycopg (the statements live as long)
_DIALECT = PGDialect_psycopg()


async def read_pool() -> "AsyncConnectionPool[DeadlineAsyncConnection]":
    """This process's pool on the running event loop, opened on first use (connections come in the
    background: the first read waits for one, up to `database_pool_timeout`)."""
    global _pool, _loop
    loop = asyncio.get_running_loop()
    if _pool is None or _loop is not loop:
        s = get_settings()
        DeadlineAsyncConnection.read_timeout = s.database_read_timeout
        _pool = AsyncConnectionPool[DeadlineAsyncConnection](
            make_url(s.database_url).set(drivername="postgresql").render_as_string(hide_password=False),
            connection_class=DeadlineAsyncConnection,
            kwargs={
                "autocommit": True,  # one SELECT: no BEGIN and ROLLBACK round trips
                "row_factory": namedtuple_row,  # attributes, as a SQLAlchemy Row has
                "prepare_threshold": None,  # as measured (bench/gateway_cpu.py)
                "connect_timeout": s.database_connect_timeout,
                "options": (
                    f"-c statement_timeout={s.database_statement_timeout_ms} "
                    f"-c lock_timeout={s.database_lock_timeout_ms}"
                ),
            },
            min_size=1,
            max_size=s.db_read_pool_size,
            timeout=s.database_pool_timeout,
            # A failed connect is retried once at once, then left to the next read: the pool's
            # backoff (1, 2, 4 ... s) would keep answering 503 for seconds after Postgres is back.
            reconnect_timeout=0.0,
            configure=_stamp_idle_start,
            reset=_stamp_idle_start,
            open=False,
            name="reads",
        )
        _loop = loop
        await _pool.open()
    return _pool


async def close_read_pool() -> None:
    """Close this process's pool, if it made one (the app's lifespan, on shutdown)."""
    global _pool, _loop
    if _pool is not None and _loop is asyncio.get_running_loop():
        await _pool.close()
    _pool, _loop = None, None


async def first_row(statement: ClauseElement, params: dict[str, Any]) -> Any:
    """The first row (a namedtuple: columns by label) of a read-only SQLAlchemy Core `statement`
    with these bound parameters, or None. Raises `psycopg.OperationalError` for a database that is
    down, hung or out of free connections."""
    db.raise_if_not_answering()
    sql = _SQL.get(id(statement))
    if sql is None:
        sql = _SQL[id(statement)] = statement.compile(dialect=_DIALECT).string
    pool = await read_pool()
    idle = get_settings().database_ping_idle_seconds
    # A restart breaks every pooled connection. A read is safe to run again: a connection that turns
    # out broken (by its ping after a long idle, or by the read itself when it was used just before
    # the restart) is dropped by the pool and the read goes to the next, or to a new one.
    for _ in range(pool.max_size + 1):
        async with pool.connection() as conn:
            try:
                if time.monotonic() - conn.returned_at > idle:
                    await conn.execute("SELECT 1")
                cursor = await conn.execute(sql, params)
                return await cursor.fetchone()
            except psycopg.OperationalError:
                if not conn.broken or db.not_answering():  # hung, or refusing: the 503
                    raise
    raise psycopg.OperationalError("every pooled connection was broken")
