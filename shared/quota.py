"""The daily portrait quota (MAX_PORTRAITS_PER_DAY): one rule, checked by the API (an early
refusal, 429) and again by the generate handler (`daily_limit`)."""

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from shared.config import get_settings
from shared.contracts.generate_portraits import MAX_COUNT
from shared.models import Portrait

__all__ = ["MAX_COUNT", "QuotaExceeded", "check_daily_quota", "portraits_made_today"]


def portraits_made_today(session: Session, user_id: uuid.UUID, *, except_job: uuid.UUID | None = None) -> int:
    """Portraits of the user in the last 24 hours; those of `except_job` are left out (a retried
    attempt does not count what its earlier attempt stored)."""
    query = select(func.count(Portrait.id)).where(
        Portrait.user_id == user_id, Portrait.created_at >= datetime.now(UTC) - timedelta(days=1)
    )
    if except_job is not None:
        query = query.where(or_(Portrait.job_id.is_(None), Portrait.job_id != except_job))
    return session.scalar(query) or 0


@dataclass(frozen=True)
class QuotaExceeded:
    limit: int  # portraits a day
    left: int  # still allowed today (>= 0)


def check_daily_quota(
    session: Session, user_id: uuid.UUID, wanted: int, *, except_job: uuid.UUID | None = None
) -> QuotaExceeded | None:
    """None when `wanted` more portraits fit in the user's last 24 hours, else the limit and how
    many are left (`except_job`: see portraits_made_today)."""
    limit = get_settings().max_portraits_per_day
    made = portraits_made_today(session, user_id, except_job=except_job)
    if made + wanted <= limit:
        return None
    return QuotaExceeded(limit, max(limit - made, 0))
