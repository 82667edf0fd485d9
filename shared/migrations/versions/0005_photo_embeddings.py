"""photo embeddings and reason sentences: the 128-d face embedding of a checked photo, kept so
the set's identity check never computes it twice; the reason as a catalogue sentence (EN/KO)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-06 20:40:00
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # float4[]: dlib's embedding is float32, stored exactly.
    op.add_column("photos", sa.Column("embedding", postgresql.ARRAY(sa.REAL()), nullable=True))
    # The reason as a catalogue sentence (shared/i18n.py: key + values), shown in either language.
    op.add_column(
        "photos", sa.Column("reason_sentence", postgresql.JSONB(astext_type=sa.Text()), nullable=True)
    )


def downgrade() -> None:
    op.drop_column("photos", "reason_sentence")
    op.drop_column("photos", "embedding")
