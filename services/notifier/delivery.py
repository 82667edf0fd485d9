"""One mail per event: the `email_deliveries` row of an event key, an outbox record of the send.

No transaction stays open while the SMTP server is talked to (that can take minutes of retries):

1. `claim_delivery`, in a short transaction: the row is inserted (a unique key) or locked, and,
   unless it is `sent` or another live attempt is sending it, stamped `sending` by this job attempt
   (`sender_job_id`, `sender_worker`) with the event's Message-ID, and committed.
2. The mail is sent, no transaction open.
3. `mark_sent` (or `release_delivery`) in another short transaction, which the caller retries
   through a database outage: after the server's 250 the mail is never sent again by this process,
   however long Postgres takes to answer (services/notifier/tasks.py).

Two runs of one event (a redelivered task, a second job with the same key) take turns: while the
attempt that claimed the row still runs (its job `running` with that worker), the other gets
`Claim.busy` and waits. `look_up_delivery` gives the same answer without claiming or locking, so a
waiting run learns it before doing the work the mail needs (S3 reads, a sign-in token).

A row left `sending` by an attempt that is over (its process died, or the database failed it,
between the 250 and the record) has no known outcome: it is sent again, with the same Message-ID,
so the receiving side can tell the copy (`Claim.outcome_unknown`).
"""

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from shared.models import EmailDelivery, Job, JobStatus

SENDING = "sending"
SENT = "sent"
FAILED = "failed"
SKIPPED = "skipped"
BUSY = "busy"  # a claim's answer only, never stored: another live attempt is sending it


@dataclass(frozen=True)
class Sender:
    """The job attempt sending a mail (`JobContext.job_id`, `JobContext.worker`)."""

    job_id: uuid.UUID
    worker: str


@dataclass(frozen=True)
class Claim:
    """What `claim_delivery` found: `status` `sent` (nothing to do), `busy` (another attempt that
    still runs is sending it: wait) or `sending` (this attempt's to send)."""

    status: str
    message_id: str | None = None
    outcome_unknown: bool = False  # a `sending` row of an attempt that is over: this is a resend


def look_up_delivery(session: Session, event_key: str, sender: Sender) -> Claim | None:
    """What `claim_delivery` would answer `sender` now if it is not this attempt's to send: `sent`
    or `busy`; None when the row is free to claim (none yet, `failed`, `skipped`, or left `sending`
    by an attempt that is over). Reads without a lock and claims nothing: `claim_delivery` decides
    again under the row lock (another attempt may claim it in between)."""
    delivery = session.scalar(select(EmailDelivery).where(EmailDelivery.event_key == event_key))
    return None if delivery is None else _taken(session, delivery, sender)


def claim_delivery(
    session: Session,
    *,
    event_key: str,
    template: str,
    user_id: uuid.UUID | None,
    message_id: str,
    sender: Sender,
) -> Claim:
    """Claim `event_key`'s delivery for `sender` in `session` (the caller commits at once).

    The row lock taken here is held only until that commit; the claim itself is the row's
    `sending` status and sender, which the caller's commit makes visible before any SMTP traffic."""
    inserted = session.execute(
        insert(EmailDelivery)
        .values(
            id=uuid.uuid4(),
            event_key=event_key,
            template=template,
            user_id=user_id,
            status=SENDING,
            message_id=message_id,
            sender_job_id=sender.job_id,
            sender_worker=sender.worker,
        )  # fmt: skip
        .on_conflict_do_nothing(constraint="uq_email_deliveries_event")
        .returning(EmailDelivery.id)
    ).scalar_one_or_none()
    delivery = session.scalars(
        select(EmailDelivery)
        .where(EmailDelivery.event_key == event_key)
        .with_for_update()
        .execution_options(populate_existing=True)  # the locked row, not one `look_up_delivery` read
    ).one()
    if inserted is not None:
        return Claim(SENDING, message_id)
    if (taken := _taken(session, delivery, sender)) is not None:
        return taken
    unknown = _left_by_another(delivery, sender)  # and that attempt is over (else `busy` above)
    delivery.status = SENDING
    delivery.message_id = message_id
    delivery.sender_job_id = sender.job_id
    delivery.sender_worker = sender.worker
    delivery.error = None
    return Claim(SENDING, message_id, outcome_unknown=unknown)


def _taken(session: Session, delivery: EmailDelivery, sender: Sender) -> Claim | None:
    """`sent`, or `busy` while another attempt that still runs is sending it; else None (free)."""
    if delivery.status == SENT:
        return Claim(SENT, delivery.message_id)
    if _left_by_another(delivery, sender) and _still_running(session, delivery):
        return Claim(BUSY, delivery.message_id)
    return None


def _left_by_another(delivery: EmailDelivery, sender: Sender) -> bool:
    """Whether another attempt stamped `delivery` `sending` (sent or not: this one cannot know)."""
    return delivery.status == SENDING and delivery.sender_worker != sender.worker


def _still_running(session: Session, delivery: EmailDelivery) -> bool:
    """Whether the attempt that stamped `delivery` is still running (the job runner's own record:
    the reaper or a take-over ends a dead worker's attempt within a few heartbeats)."""
    if delivery.sender_job_id is None or delivery.sender_worker is None:
        return False
    # Read again: the session may hold this job from an earlier look (a retry has a new worker since).
    job = session.get(Job, delivery.sender_job_id, populate_existing=True)
    return job is not None and job.status is JobStatus.running and job.worker == delivery.sender_worker


def release_delivery(session: Session, event_key: str, sender: Sender, status: str, reason: str) -> None:
    """Record in `session` that `sender` did not send `event_key`'s mail (`failed`, `skipped`),
    unless another attempt claimed the row since."""
    session.execute(
        update(EmailDelivery)
        .where(
            EmailDelivery.event_key == event_key,
            EmailDelivery.status == SENDING,
            EmailDelivery.sender_worker == sender.worker,
        )
        .values(status=status, error=reason[:2000])
    )


def mark_sent(session: Session, event_key: str, message_id: str) -> None:
    """Record in `session` that the SMTP server accepted `event_key`'s mail (whoever claimed the
    row since: the mail went, so no one is to send it again)."""
    session.execute(
        update(EmailDelivery)
        .where(EmailDelivery.event_key == event_key)
        .values(status=SENT, message_id=message_id, sent_at=datetime.now(UTC), error=None)
    )
