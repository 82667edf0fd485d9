"""Limits of a portrait request, checked by the API (an early refusal) and again by the handler."""

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from shared.models import Portrait

MAX_COUNT = 8  # portraits per style in one request


def portraits_made_today(session: Session, user_id: uuid.UUID, *, except_job: uuid.UUID | None = None) -> int:
    """Portraits of the user in the last 24 hours; those of `except_job` are left out (a retried
    attempt does not count what its earlier attempt stored)."""
    query = select(func.count(Portrait.id)).where(
        Portrait.user_id == user_id, Portrait.created_at >= datetime.now(UTC) - timedelta(days=1)
    )
    if except_job is not None:
        query = query.where(or_(Portrait.job_id.is_(None), Portrait.job_id != except_job))
    return session.scalar(query) or 0
