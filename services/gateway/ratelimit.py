"""Rate limits (slowapi, counters in Redis so every gateway replica shares them)."""

from fastapi import Request
from slowapi import Limiter
from slowapi.util import get_remote_address

from shared.config import get_settings


def user_or_ip(request: Request) -> str:
    """Per account on routes that authenticate (the limit is checked after their dependencies ran and
    `get_current_user` recorded the user), else per address."""
    user_id = getattr(request.state, "user_id", None)
    return f"user:{user_id}" if user_id else f"ip:{get_remote_address(request)}"


limiter = Limiter(
    key_func=get_remote_address,
    storage_uri=get_settings().redis_url,
    strategy="moving-window",
    headers_enabled=False,
)
