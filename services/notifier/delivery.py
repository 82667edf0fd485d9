"""At most one mail per event: the `email_deliveries` row of an event key, locked while sending.

The row is inserted if new (a unique key) and then locked with SELECT ... FOR UPDATE for the rest
of the transaction, so two runs of the same event (a redelivered task, a second job with the same
key) take turns: the second one sees `sent` and does nothing.
"""

import uuid
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from shared.models import EmailDelivery

SENT = "sent"
FAILED = "failed"
SKIPPED = "skipped"


def claim_delivery(
    session: Session, *, event_key: str, template: str, user_id: uuid.UUID | None
) -> EmailDelivery:
    """The locked delivery row of `event_key`, created (status `sending`) if there was none."""
    session.execute(
        insert(EmailDelivery)
        .values(
            id=uuid.uuid4(),
            event_key=event_key,
            template=template,
            user_id=user_id,
            status="sending",
        )  # fmt: skip
        .on_conflict_do_nothing(constraint="uq_email_deliveries_event")
    )
    return session.scalars(
        select(EmailDelivery).where(EmailDelivery.event_key == event_key).with_for_update()
    ).one()


def mark_sent(delivery: EmailDelivery, message_id: str) -> None:
    delivery.status = SENT
    delivery.message_id = message_id
    delivery.sent_at = datetime.now(UTC)
    delivery.error = None


def mark_not_sent(delivery: EmailDelivery, status: str, reason: str) -> None:
    delivery.status = status
    delivery.error = reason[:2000]
