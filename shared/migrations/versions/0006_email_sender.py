"""email delivery sender: the job attempt sending a mail, so the `sending` row can be committed
before the SMTP conversation (services/notifier/delivery.py) instead of locked through it

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08 10:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("email_deliveries", sa.Column("sender_job_id", sa.Uuid(), nullable=True))
    op.add_column("email_deliveries", sa.Column("sender_worker", sa.String(length=255), nullable=True))


def downgrade() -> None:
    op.drop_column("email_deliveries", "sender_worker")
    op.drop_column("email_deliveries", "sender_job_id")
