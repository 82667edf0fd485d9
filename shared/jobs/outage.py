"""Which exceptions say a dependency is down, hung or failing (an outage), not that the job is wrong.

A job attempt that fails so is retried without counting against `max_attempts` for
`JOB_OUTAGE_WINDOW_SECONDS` (shared/jobs/retry.py): a 5-minute S3 or Postgres outage fails no job.
The same classes as the gateway's 503 answers (services/gateway/outages.py).
"""

import botocore.exceptions
import redis.exceptions
import sqlalchemy.exc

from shared import storage

DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    sqlalchemy.exc.OperationalError,  # connection refused, closed, timed out (psycopg)
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,  # no free connection in the pool
)
REDIS_ERRORS = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


def database_down(error: BaseException) -> bool:
    """Whether `error` says Postgres did not answer (or hung up), rather than refusing a statement."""
    return isinstance(error, DATABASE_ERRORS)


def outage_of(error: BaseException) -> str | None:
    """The dependency ("database", "redis", "storage") that `error` says is down, hung or failing
    (S3 answering 5xx, e.g. a full disk, included); None for any other error (a bug, bad input)."""
    if database_down(error):
        return "database"
    if isinstance(error, REDIS_ERRORS):
        return "redis"
    if isinstance(error, botocore.exceptions.BotoCoreError) or (
        isinstance(error, botocore.exceptions.ClientError) and storage.store_failed(error)
    ):
        return "storage"
    return None
