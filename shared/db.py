"""Database engine and sessions (one engine per process, created lazily so forked workers get their own).

Timeouts (settings `database_*`, README "Timeouts"): libpq `connect_timeout` bounds a connect,
SQLAlchemy `pool_timeout` the wait for a free pooled connection, the server's `statement_timeout` a
slow statement. A *hung* server (frozen, partitioned: the kernel still accepts and acknowledges, nobody
answers) is not caught by any of those: `DeadlineConnection` bounds every wait of psycopg for an answer
(`database_read_timeout`), closes the connection when it expires, and keeps new connects from piling up
on a server that just did not answer (`_unanswered_until`). A wait for a lock is no hang: the server's
`lock_timeout` (`database_lock_timeout_ms`, shorter than the read timeout) ends it first with
`LockNotAvailable` (`lock_not_available()`), which leaves the pool alone. Without it, one request
waiting for another's lock was taken for a hung server: its connection closed, the pool dropped,
and every request of the process answered 503 for the next 2 s.
"""

import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import psycopg
from sqlalchemy import Engine, create_engine, event, exc
from sqlalchemy.orm import Session, sessionmaker

from shared.config import get_settings

NOT_ANSWERING = "the database did not answer within {:g} s"


class DeadlineConnection(psycopg.Connection):
    """A psycopg connection whose every wait for the server ends after `read_timeout` seconds.

    psycopg's own `Connection.wait(timeout=)` raises `_WaitTimeout` (an `OperationalError`); the
    connection is then in an unknown state, so it is closed, which SQLAlchemy reads as a disconnect
    (the pool drops it and every older connection).
    """

    read_timeout: float | None = None

    def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:  # type: ignore[override]
        limit = timeout if timeout is not None else self.read_timeout
        try:
            return super().wait(gen, interval=interval, timeout=limit)
        except psycopg.errors._WaitTimeout:  # noqa: SLF001 - psycopg's documented wait timeout
            if timeout is not None:  # the caller asked for this timeout and handles it
                raise
            self.pgconn.finish()
            _mark_unanswered(limit or 0.0)
            raise psycopg.OperationalError(NOT_ANSWERING.format(limit)) from None


_unanswered_until = 0.0  # monotonic time until which new connects fail at once


def _mark_unanswered(seconds: float) -> None:
    global _unanswered_until
    _unanswered_until = time.monotonic() + seconds


def not_answering() -> bool:
    """Whether the server just left a wait unanswered (for `database_read_timeout` seconds after)."""
    return time.monotonic() < _unanswered_until


def raise_if_not_answering() -> None:
    """`psycopg.OperationalError` at once while `not_answering()`: no new wait on a hung server."""
    if not_answering():
        raise psycopg.OperationalError(NOT_ANSWERING.format(DeadlineConnection.read_timeout or 0.0))


def _connect(cparams: dict[str, Any]) -> DeadlineConnection:
    """Connect, unless the server just left a wait unanswered: then fail at once for `read_timeout`
    seconds (a hung postmaster accepts the socket and keeps the client for all of `connect_timeout`)."""
    raise_if_not_answering()
    try:
        return DeadlineConnection.connect(**cparams)
    except psycopg.errors.ConnectionTimeout:
        _mark_unanswered(DeadlineConnection.read_timeout or 0.0)
        raise


def _ping_if_idle(engine: Engine, idle_seconds: float) -> None:
    """Pessimistic disconnect handling, only for connections that sat idle in the pool.

    SQLAlchemy's `pool_pre_ping` sends `SELECT 1` on *every* checkout: a round trip per request, a
    large share of a signed-in read. Here a connection is pinged only when it was checked in more than
    `idle_seconds` ago (a server restarted while it slept); one in steady use goes out as it is, and a
    server that died under it fails that statement, which invalidates the whole pool (SQLAlchemy's
    disconnect handling) and answers 503. The recipe is SQLAlchemy's "disconnect handling -
    pessimistic" with a `checkout` listener raising `DisconnectionError`, which makes the pool retry
    with a fresh connection (docs: core/pooling.html#custom-legacy-pessimistic-ping).
    """

    @event.listens_for(engine, "checkin")
    def _checked_in(dbapi_connection: Any, record: Any) -> None:
        record.info["checked_in"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        if time.monotonic() - record.info.get("checked_in", 0.0) <= idle_seconds:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except psycopg.Error as e:
            if engine.dialect.is_disconnect(e, dbapi_connection, None):  # type: ignore[arg-type]
                raise exc.DisconnectionError() from e
            raise


def lock_not_available(exc: BaseException) -> bool:
    """Whether `exc` (SQLAlchemy's wrapper or psycopg's own) is Postgres's `lock_not_available`
    (SQLSTATE 55P03): a lock wait passed `lock_timeout`; the database itself is fine."""
    return isinstance(getattr(exc, "orig", exc), psycopg.errors.LockNotAvailable)


@lru_cache
def get_engine() -> Engine:
    s = get_settings()
    DeadlineConnection.read_timeout = s.database_read_timeout
    engine = create_engine(
        s.database_url,
        pool_size=s.db_pool_size,
        max_overflow=s.db_max_overflow,
        pool_timeout=s.database_pool_timeout,
        connect_args={
            "connect_timeout": s.database_connect_timeout,
            "options": (
                f"-c statement_timeout={s.database_statement_timeout_ms} "
                f"-c lock_timeout={s.database_lock_timeout_ms}"
            ),
        },
    )
    event.listen(engine, "do_connect", lambda dialect, record, cargs, cparams: _connect(cparams))
    _ping_if_idle(engine, s.database_ping_idle_seconds)
    return engine


@lru_cache
def get_sessionmaker() -> sessionmaker[Session]:
    return sessionmaker(get_engine(), expire_on_commit=False)


@contextmanager
def session_scope() -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    session = get_sessionmaker()()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def reset_engine() -> None:
    """Forget the engine (after fork, or when settings change in tests)."""
    if get_engine.cache_info().currsize:
        get_engine().dispose(close=False)
    get_engine.cache_clear()
    get_sessionmaker.cache_clear()
