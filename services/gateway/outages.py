"""What a client sees while Postgres, Redis or S3 is down or hung: 503, `Retry-After`, one sentence.

The clients' own timeouts (settings `database_*`, `redis_*`, `s3_*`) turn a dead or hung server into
an exception within about 2 s; this module maps those exceptions, in one place, to the answer. An S3
store that answers, but with a 5xx (InternalError, ServiceUnavailable, SlowDown: botocore's
ClientError, e.g. SeaweedFS with a full disk), is an outage too; a 4xx ClientError stays a 500 (our
bug). A request that does not need the missing dependency never gets here.
"""

import logging

import botocore.exceptions
import psycopg
import redis.exceptions
import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from shared import storage
from shared.config import get_settings
from shared.db import lock_not_available
from shared.i18n import current_locale, say

log = logging.getLogger(__name__)

BUSY = "outage.busy"  # the catalogue key of "busy", answered with Retry-After: BUSY_RETRY_AFTER_SECONDS
BUSY_RETRY_AFTER_SECONDS = 5  # connections are held for milliseconds: soon, not in a minute

# (exception types, the dependency's name, the catalogue key of the sentence a person reads)
OUTAGES: list[tuple[tuple[type[Exception], ...], str, str]] = [
    (
        # No free connection in SQLAlchemy's pool within DATABASE_POOL_TIMEOUT: this process has every
        # connection in use (a refused connect raises at once). A lock wait past lock_timeout (an
        # OperationalError, LockNotAvailable) is "busy" too. Not psycopg_pool's PoolTimeout: the
        # async read pool raises it also when it cannot connect at all (Postgres down).
        (sqlalchemy.exc.TimeoutError,),
        "database",
        BUSY,
    ),
    (
        # psycopg's own: the signed-in reads' async pool (shared/db_async.py; PoolTimeout is one)
        (sqlalchemy.exc.OperationalError, psycopg.OperationalError),
        "database",
        "outage.database",
    ),
    (
        (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError),
        "redis",
        "outage.redis",
    ),
    (
        (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError),
        "storage",
        "outage.storage",
    ),
]


# S3 answered with a 5xx (storage.store_failed): it is up but cannot store or serve files right now.
STORE_FAILING = ("storage", "outage.store_failing")


def _sentence_key(exc: BaseException, key: str) -> str:
    """`key` of the OUTAGES entry `exc` matched, or BUSY for a row or advisory lock that waited past
    lock_timeout (an OperationalError like an outage's, but the database answers)."""
    return BUSY if lock_not_available(exc) else key


def outage_of(exc: BaseException) -> tuple[str, str] | None:
    """(dependency, sentence in the request's language) when `exc` says a dependency is down, hung or
    failing, else None."""
    for types, dependency, key in OUTAGES:
        if isinstance(exc, types):
            return dependency, say(_sentence_key(exc, key), current_locale.get())
    if isinstance(exc, botocore.exceptions.ClientError) and storage.store_failed(exc):
        return STORE_FAILING[0], say(STORE_FAILING[1], current_locale.get())
    return None


DEPENDENCY_ERRORS: tuple[type[Exception], ...] = tuple(t for types, _, _ in OUTAGES for t in types)


def unavailable(dependency: str, sentence: str, retry_after: int | None = None) -> JSONResponse:
    """The 503 answer: `{"detail": sentence, "dependency": name}` with `Retry-After` (RFC 9110 10.2.3):
    `retry_after` seconds, by default RETRY_AFTER_SECONDS."""
    seconds = retry_after if retry_after is not None else get_settings().retry_after_seconds
    return JSONResponse(
        {"detail": sentence, "dependency": dependency},
        status_code=503,
        headers={"Retry-After": str(seconds)},
    )


def _answer(
    request: Request, exc: Exception, dependency: str, sentence: str, retry_after: int | None = None
) -> JSONResponse:
    log.warning(
        "%s unavailable on %s %s: %s: %s",
        dependency,
        request.method,
        request.url.path,
        type(exc).__name__,
        str(exc).splitlines()[0][:200] if str(exc) else "",
    )
    return unavailable(dependency, sentence, retry_after)


def install_outage_handlers(app: FastAPI) -> None:
    """Register one exception handler per dependency on `app`, and one for S3's 5xx answers."""
    for types, dependency, key in OUTAGES:

        async def handler(request: Request, exc: Exception, dependency=dependency, key=key):  # type: ignore[no-untyped-def]
            key = _sentence_key(exc, key)
            retry_after = BUSY_RETRY_AFTER_SECONDS if key == BUSY else None
            return _answer(request, exc, dependency, say(key, current_locale.get()), retry_after)

        for exc_type in types:
            app.add_exception_handler(exc_type, handler)

    async def store_answered_error(request: Request, exc: Exception) -> JSONResponse:
        if (outage := outage_of(exc)) is None:
            raise exc  # a 4xx: not an outage; the usual 500 (logged with its traceback)
        return _answer(request, exc, *outage)

    app.add_exception_handler(botocore.exceptions.ClientError, store_answered_error)
