"""Rate limits (slowapi, counters in Redis so every gateway replica shares them)."""

from fastapi import Request
from slowapi import Limiter
from slowapi.util import get_remote_address

from shared.config import get_settings
from shared.security import decode_access_token


def user_or_ip(request: Request) -> str:
    auth = request.headers.get("authorization", "")
    user_id = decode_access_token(auth.removeprefix("Bearer ").strip()) if auth else None
    return f"user:{user_id}" if user_id else f"ip:{get_remote_address(request)}"


limiter = Limiter(
    key_func=get_remote_address,
    storage_uri=get_settings().redis_url,
    strategy="moving-window",
    headers_enabled=False,
)
