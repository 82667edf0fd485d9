"""No orphaned objects when a writer dies between its S3 write and its database commit.

Rows name their objects, so an object is written first and its row committed after. A process
killed in between (a pod evicted mid-upload, a GPU worker SIGKILLed mid-job) would leave an
object no row names, holding a user's face photo that nothing can find or erase. So every such
write is announced first, in a transaction of its own, and the announcement is deleted in the
same transaction as the row: an announcement that outlives `PENDING_OBJECT_GRACE_SECONDS` belongs
to a writer that never committed, and the hourly retention sweep deletes its object. (The write-
ahead "intent" pattern; the in-process cleanup on a caught error stays the fast path.)

    announce(keys)              # before the first PutObject; commits on its own
    ... storage.put_bytes(...)
    session.add(row); settle(session, keys); session.commit()

The same list holds the objects of rows the user deleted (`condemn`, in the transaction that
deletes the row): listed as already past their grace, they are deleted by the scheduler's next
clean-up, retried on every pass until S3 answers. A key ending in "*" stands for every object whose
key starts with the rest (a likeness's folder, a pose photo's files).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from shared import storage
from shared.db import session_scope
from shared.models import PendingObject

log = logging.getLogger(__name__)


def announce(keys: Sequence[str]) -> None:
    """Record `keys` as about to be written, committed before the first write.

    Re-announcing a key (a retried job writes the same keys) restarts its grace period.
    Raises what the database raises (an outage): the caller writes nothing then."""
    if not keys:
        return
    with session_scope() as session:
        stmt = insert(PendingObject).values([{"key": k} for k in keys])
        session.execute(stmt.on_conflict_do_update(index_elements=["key"], set_={"created_at": func.now()}))


def settle(session: Session, keys: Sequence[str]) -> None:
    """Forget `keys` in the caller's transaction: they commit with the row that names them."""
    if keys:
        session.execute(delete(PendingObject).where(PendingObject.key.in_(list(keys))))


# An announcement this old is due at any grace period: how `condemn` lists objects to delete now.
DUE_AT_ONCE = datetime(2000, 1, 1, tzinfo=UTC)


def condemn(session: Session, keys: Sequence[str]) -> None:
    """List `keys` (or prefixes followed by "*", under a user's prefix) for deletion, in the caller's
    transaction: commit it with the row's delete, then delete the objects at once if you can and
    `settle` them; whatever S3 did not delete is deleted by the scheduler's next clean-up."""
    if keys:
        stmt = insert(PendingObject).values([{"key": k, "created_at": DUE_AT_ONCE} for k in keys])
        session.execute(stmt.on_conflict_do_update(index_elements=["key"], set_={"created_at": DUE_AT_ONCE}))


def delete_now(keys: Sequence[str]) -> bool:
    """Delete condemned `keys` (prefixes too) and forget those S3 deleted; False, leaving the rest
    for the scheduler, when storage is down or failing (shared.storage.store_failed) or S3 did not
    delete some of them (DeleteObjects' `Errors`, refusals too); other errors raise."""
    try:
        failed = _delete(list(keys))
    except Exception as e:
        if storage.store_failed(e):
            return False
        raise
    gone = [k for k in keys if k not in failed]
    try:
        with session_scope() as session:
            settle(session, gone)
    except Exception:  # the objects are gone; the next clean-up deletes nothing and forgets them
        log.warning("could not forget %d deleted keys; the clean-up will", len(gone), exc_info=True)
    return not failed


def _delete(keys: list[str]) -> dict[str, str]:
    """Delete the objects of announcement `keys` (a key ending in "*" is a prefix); returns the
    announcement keys S3 answered but did not delete, with an S3 error code. Raises botocore errors
    when S3 did not answer."""
    failed: dict[str, str] = {}
    try:
        storage.delete_keys([k for k in keys if not k.endswith("*")])
    except storage.DeleteIncomplete as e:
        failed |= e.failed
    for key in (k for k in keys if k.endswith("*")):  # one by one: a refused prefix holds up no other
        try:
            storage.delete_prefix(key[:-1])
        except storage.DeleteIncomplete as e:
            failed[key] = e.response["Error"]["Code"]
    return failed


def sweep(grace_seconds: float, batch: int = 1000) -> int:
    """Delete the objects announced more than `grace_seconds` ago and never settled, and their
    announcements; returns how many. Each batch holds its announcements locked (FOR UPDATE SKIP
    LOCKED: sweeps on several workers share the work) until the objects are deleted, so a writer
    re-announcing one of them waits and then writes after the delete.

    A key S3 answered but did not delete (DeleteObjects' `Errors`: a refusal such as an object
    lock, or a store failure) keeps its announcement, dated now: it is tried again after the grace
    period and holds up no other key. Raises botocore/SQLAlchemy errors on an outage: the
    announcements stay for the next sweep."""
    swept = 0
    cutoff = datetime.now(UTC) - timedelta(seconds=grace_seconds)
    while True:
        with session_scope() as session:
            keys = list(
                session.scalars(
                    select(PendingObject.key)
                    .where(PendingObject.created_at <= cutoff)
                    .order_by(PendingObject.created_at)
                    .limit(batch)
                    .with_for_update(skip_locked=True)
                )
            )
            if not keys:
                return swept
            failed = _delete(keys)
            gone = [k for k in keys if k not in failed]
            session.execute(delete(PendingObject).where(PendingObject.key.in_(gone)))
            if failed:
                log.warning(
                    "S3 did not delete %d objects (%s); trying again later",
                    len(failed), ", ".join(sorted(set(failed.values()))),
                )  # fmt: skip
                session.execute(
                    update(PendingObject)
                    .where(PendingObject.key.in_(list(failed)))
                    .values(created_at=datetime.now(UTC))
                )
        swept += len(gone)
