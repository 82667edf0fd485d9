"""Revoking refresh tokens: on logout, reuse of a rotated token, a password change, erasure."""

from datetime import UTC, datetime

from sqlalchemy import ColumnElement, update
from sqlalchemy.orm import Session

from shared.models import RefreshToken


def revoke_refresh_tokens(session: Session, *where: ColumnElement[bool]) -> None:
    """Revoke the live refresh tokens that match `where` (a session family, or all of a user's)."""
    session.execute(
        update(RefreshToken)
        .where(*where, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC))
    )
