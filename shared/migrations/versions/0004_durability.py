"""durability: retry times on the outbox, a job's outage start, an account's erasure start

- `outbox.available_at`: the relay publishes a row only from this time on (a retry's backoff;
  NULL = at once).
- `jobs.outage_since`: when the job's attempts began failing because a dependency was down; its
  attempts are not counted against `max_attempts` for `JOB_OUTAGE_WINDOW_SECONDS` from then.
- `users.deleting_since`: when the account's erasure was asked for (shown while it is pending;
  the scheduler finishes an erasure whose job ended without erasing).

Revision ID: 0004
Revises: 0003_pending_objects
Create Date: 2026-12-06 20:50:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003_pending_objects"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("outbox", sa.Column("available_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("jobs", sa.Column("outage_since", sa.DateTime(timezone=True), nullable=True))
    op.add_column("users", sa.Column("deleting_since", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE users SET deleting_since = now() WHERE deleting")


def downgrade() -> None:
    op.drop_column("users", "deleting_since")
    op.drop_column("jobs", "outage_since")
    op.drop_column("outbox", "available_at")
