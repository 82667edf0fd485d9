"""Rate limits (slowapi, counters in Redis so every gateway replica shares them).

When Redis does not answer (`redis_socket_timeout`), slowapi's in-memory fallback takes over: the same
limits, counted per gateway process, until a backend check (backing off 1, 2, 4 ... 32 s) finds Redis
again. `swallow_errors` keeps a limiter that fails in any other way from failing the request: a rate
limit must never turn a Redis hiccup into an outage (issue #16).
"""

import hashlib
import logging
import math
import time
import uuid

from fastapi import Request
from limits import parse
from slowapi import Limiter
from slowapi.util import get_remote_address

from shared.config import get_settings


def user_or_ip(request: Request) -> str:
    """Per account on routes that authenticate (the limit is checked after their dependencies ran and
    `get_current_user` recorded the user), else per address."""
    user_id = getattr(request.state, "user_id", None)
    return f"user:{user_id}" if user_id else f"ip:{get_remote_address(request)}"


def _limiter() -> Limiter:
    s = get_settings()
    return Limiter(
        key_func=get_remote_address,
        storage_uri=s.redis_url,
        storage_options=s.redis_options(),
        strategy="moving-window",
        headers_enabled=False,
        in_memory_fallback_enabled=True,
        swallow_errors=True,
    )


limiter = _limiter()


log = logging.getLogger(__name__)


def _account_key(email: str) -> str:
    """The per-account counter's key: a hash, so no address is written in Redis."""
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()


def login_wait_seconds(email: str) -> int:
    """Seconds until the account `email` may be tried again (0: now): after
    LOGIN_FAILURES_PER_ACCOUNT wrong passwords within its window, counted for any address, one that
    has no account too (the answer must not tell which exist). A limiter that cannot count (Redis
    down, no fallback yet) lets the login through: a rate limit must not lock everyone out."""
    try:
        limit = parse(get_settings().login_failures_per_account)
        key = _account_key(email)
        if limiter.limiter.test(limit, "login-failures", key):
            return 0
        reset_at, _ = limiter.limiter.get_window_stats(limit, "login-failures", key)
        return max(1, math.ceil(reset_at - time.time()))
    except Exception:  # noqa: BLE001 - a rate limit must not turn a Redis hiccup into an outage
        log.warning("the per-account login limit could not be read; the login is checked")
        return 0


def count_login_failure(email: str) -> None:
    """Count one wrong password for the account `email` (see `login_wait_seconds`)."""
    try:
        limiter.limiter.hit(
            parse(get_settings().login_failures_per_account), "login-failures", _account_key(email)
        )
    except Exception:  # noqa: BLE001 - a rate limit must not turn a Redis hiccup into an outage
        log.warning("a wrong password could not be counted")


def clear_login_failures(email: str) -> None:
    """Forget the wrong passwords counted for the account `email`: its password was just reset
    through the mailed link (the way out the 429 names), so the lock has no reason left."""
    try:
        limiter.limiter.clear(
            parse(get_settings().login_failures_per_account), "login-failures", _account_key(email)
        )
    except Exception:  # noqa: BLE001 - a rate limit must not turn a Redis hiccup into an outage
        log.warning("the wrong passwords counted for an account could not be cleared")


def mail_allowed(user_id: uuid.UUID, template: str) -> bool:
    """Whether the account `user_id` may be sent one more `template` mail (ACCOUNT_MAIL_RATE_LIMIT a
    template, counted whoever asks: the per-client limits let many clients flood one inbox); counts
    it. A budget per template: sign-up attempts in someone's name cannot use up their password
    resets. A limiter that cannot count (Redis down, no fallback yet) allows it: it may be wanted."""
    try:
        limit = parse(get_settings().account_mail_rate_limit)
        return limiter.limiter.hit(limit, "account-mail", template, str(user_id))
    except Exception:  # noqa: BLE001 - a rate limit must not turn a Redis hiccup into an outage
        log.warning("the account mail limit could not be counted; the mail goes out")
        return True
