"""pending objects: S3 writes whose row has not committed yet (orphan sweep)

Revision ID: 0003_pending_objects
Revises: 0002_pose_photos
Create Date: 2026-11-30 05:20:00
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_pending_objects"
down_revision = "0002_pose_photos"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pending_objects",
        sa.Column("key", sa.String(length=512), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )


def downgrade() -> None:
    op.drop_table("pending_objects")
