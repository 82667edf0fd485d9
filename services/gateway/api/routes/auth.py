"""Accounts: sign up, log in, refresh, log out, verify the address, reset the password.

Answers never reveal whether an address has an account: sign-up and reset requests always get the same
202, and a failed login is one message whatever the reason.
"""

import math
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, status
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.gateway.api.deps import SESSION_ERASING, SessionDep
from services.gateway.api.language import Refusal
from services.gateway.api.schemas import (
    LoginIn,
    Message,
    RefreshIn,
    ResetConfirmIn,
    ResetRequestIn,
    SignupIn,
    TokenIn,
    TokenOut,
)
from services.gateway.ratelimit import (
    clear_login_failures,
    count_login_failure,
    limiter,
    login_wait_seconds,
    mail_allowed,
)
from services.gateway.refresh_tokens import revoke_refresh_tokens
from shared.config import get_settings
from shared.contracts import SendEmail, Template
from shared.i18n import current_locale, say
from shared.jobs import enqueue
from shared.models import EmailToken, RefreshToken, User
from shared.security import (
    create_access_token,
    hash_password,
    new_opaque_token,
    token_hash,
    verify_password,
)

router = APIRouter(prefix="/auth", tags=["auth"])
AUTH_LIMIT = get_settings().auth_rate_limit
BAD_LOGIN = Refusal(status.HTTP_401_UNAUTHORIZED, "auth.bad_login")
REUSE_GRACE = timedelta(seconds=10)
BAD_LINK = Refusal(status.HTTP_400_BAD_REQUEST, "auth.bad_link")


def _now() -> datetime:
    return datetime.now(UTC)


def _issue_tokens(session: Session, user: User, family_id: uuid.UUID | None = None) -> TokenOut:
    raw, hashed = new_opaque_token()
    family_id = family_id or uuid.uuid4()
    session.add(
        RefreshToken(
            user_id=user.id,
            family_id=family_id,
            token_hash=hashed,
            expires_at=_now() + timedelta(days=get_settings().refresh_token_days),
        )
    )
    access, expires_in = create_access_token(user.id, user.password_hash, family_id)
    return TokenOut(access_token=access, refresh_token=raw, expires_in=expires_in)


def _message(key: str) -> Message:
    """A `{detail}` answer: the catalogue's sentence `key` in the request's language."""
    return Message(detail=say(key, current_locale.get()))


def _mail(session: Session, user_id: uuid.UUID, template: Template) -> None:
    enqueue(session, SendEmail.account(template), user_id=user_id)


def _mail_if_allowed(session: Session, user_id: uuid.UUID, template: Template) -> None:
    """`_mail` for mails anyone may ask for in someone's name (ACCOUNT_MAIL_RATE_LIMIT). Over the
    limit nothing is sent and the answer stays the same: it must not tell whether the address exists."""
    if mail_allowed(user_id, template):
        _mail(session, user_id, template)


@router.post("/signup", status_code=202, response_model=Message)
@limiter.limit(AUTH_LIMIT)
def signup(request: Request, body: SignupIn, session: SessionDep) -> Message:
    email = body.email.lower()
    existing = session.scalar(select(User).where(User.email == email))
    if existing is not None:
        hash_password(body.password)  # same work as a new account, so timing tells nothing
        _mail_if_allowed(session, existing.id, Template.signup_existing)
    else:
        # The mails' language: `locale` if sent, else the request's (Accept-Language, as the answer).
        locale = body.locale or current_locale.get()
        user = User(email=email, password_hash=hash_password(body.password), locale=locale)
        session.add(user)
        try:
            session.flush()
        except IntegrityError:  # a concurrent twin registered it first: same answer
            session.rollback()
            return _message("auth.signup_accepted")
        _mail(session, user.id, Template.verify_email)
    session.commit()
    return _message("auth.signup_accepted")


def account_not_locked(body: LoginIn) -> LoginIn:
    """The login body, or 429 with the minutes to wait once the account was tried with
    LOGIN_FAILURES_PER_ACCOUNT wrong passwords (from any address) within its window. A dependency,
    so it answers before the route's per-address limit (slowapi checks inside the route's call):
    both trip at the 11th wrong password, and the per-address "wait a minute" was the wrong wait for
    a locked account."""
    if wait := login_wait_seconds(body.email):
        raise Refusal(
            status.HTTP_429_TOO_MANY_REQUESTS,
            "auth.too_many_failures",
            headers={"Retry-After": str(wait)},
            minutes=math.ceil(wait / 60),
        )
    return body


RETRY_AFTER = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}
TOO_MANY: dict[int | str, dict[str, Any]] = {
    429: {"description": "too many tries of the account or from the address", "headers": RETRY_AFTER}
}


@router.post(
    "/login",
    response_model=TokenOut,
    responses=TOO_MANY,
)
@limiter.limit(AUTH_LIMIT)
def login(
    request: Request, body: Annotated[LoginIn, Depends(account_not_locked)], session: SessionDep
) -> TokenOut:
    """Tokens for the right email and password; 401 otherwise, and 429 once the account was tried
    with LOGIN_FAILURES_PER_ACCOUNT wrong passwords (from any address) within its window
    (`account_not_locked`), or this address passed AUTH_RATE_LIMIT."""
    user = session.scalar(select(User).where(User.email == body.email.lower()))
    ok = verify_password(user.password_hash if user else None, body.password)
    if user is None or not ok:
        count_login_failure(body.email)
        raise BAD_LOGIN
    if user.deleting:  # told only to who knows the password: the erasure is under way
        since = (user.deleting_since or datetime.now(UTC)).astimezone(UTC)
        raise Refusal(status.HTTP_403_FORBIDDEN, "auth.account_erasing", since=f"{since:%Y-%m-%d %H:%M}")
    tokens = _issue_tokens(session, user)
    session.commit()
    return tokens


@router.post("/refresh", response_model=TokenOut)
@limiter.limit(AUTH_LIMIT)
def refresh(request: Request, body: RefreshIn, session: SessionDep) -> TokenOut:
    token = session.scalar(
        select(RefreshToken)
        .where(RefreshToken.token_hash == token_hash(body.refresh_token))
        .with_for_update()
    )
    if token is None:
        raise Refusal(status.HTTP_401_UNAUTHORIZED, "auth.login_again")
    user = session.get(User, token.user_id)
    if user is not None and user.deleting:  # its erasure revoked the session: say so, not "log in"
        raise SESSION_ERASING
    # A page reloaded mid-refresh may send the token it just spent: allow that for a few seconds
    # (REUSE_GRACE), but never as a second live session (see below).
    in_grace = token.used_at is not None and token.revoked_at is None and _now() - token.used_at < REUSE_GRACE
    if (token.used_at and not in_grace) or token.revoked_at:
        # A spent token came back: someone may have stolen it. End the whole session family.
        revoke_refresh_tokens(session, RefreshToken.family_id == token.family_id)
        session.commit()
        raise Refusal(status.HTTP_401_UNAUTHORIZED, "auth.login_again")
    if token.expires_at < _now() or user is None:
        raise Refusal(status.HTTP_401_UNAUTHORIZED, "auth.login_again")
    if in_grace:
        # One live refresh token per family: the pair minted by the first use dies, so a reuse
        # in the window replaces the session rather than forking a second one. If that pair was in
        # a thief's hands, or the user's, its next refresh hits a revoked token and ends the family.
        revoke_refresh_tokens(session, RefreshToken.family_id == token.family_id, RefreshToken.id != token.id)
    token.used_at = token.used_at or _now()
    tokens = _issue_tokens(session, user, token.family_id)
    session.commit()
    return tokens


@router.post("/logout", status_code=204)
def logout(body: RefreshIn, session: SessionDep) -> None:
    """End the session of this refresh token: its refresh tokens are revoked, and with them every
    access token the session issued (they carry its id, checked on each request: deps._user_of)."""
    token = session.scalar(
        select(RefreshToken).where(RefreshToken.token_hash == token_hash(body.refresh_token))
    )
    if token is not None:
        revoke_refresh_tokens(session, RefreshToken.family_id == token.family_id)
        session.commit()


def _use_email_token(
    session: Session, raw: str, purpose: str, *, spent_ok: Callable[[User], bool] | None = None
) -> User:
    """Spend a single-use emailed token; returns its user, or answers 400 (BAD_LINK) for an unknown,
    expired or spent link. With `spent_ok`, a spent link whose user passes it returns the user too
    (a use that is idempotent and already done), whatever its expiry.

    The row is read once, FOR UPDATE: a twin use of the same link (two clicks at the same instant)
    waits for this one's commit and then reads it spent. Deciding "spent" on an earlier, unlocked
    read let that twin see it unspent, wait, and then refuse it as used.
    """
    token = session.scalar(
        select(EmailToken)
        .where(EmailToken.token_hash == token_hash(raw), EmailToken.purpose == purpose)
        .with_for_update()
    )
    if token is None:
        raise BAD_LINK
    # Read after the lock (its own statement, so a fresh snapshot): a twin's commit is seen.
    user = session.get(User, token.user_id)
    if user is None:
        raise BAD_LINK
    if token.used_at is not None:
        if spent_ok is not None and spent_ok(user):
            return user
        raise BAD_LINK
    if token.expires_at < _now():
        raise BAD_LINK
    token.used_at = _now()
    return user


def _email_confirmed(user: User) -> bool:
    return user.email_verified_at is not None


@router.post("/verify-email", response_model=Message)
@limiter.limit(AUTH_LIMIT)
def verify_email(request: Request, body: TokenIn, session: SessionDep) -> Message:
    """Confirm the address. A link opened again once it worked (a second click, another device, two
    clicks at once) hears that the address is confirmed, not that the link is invalid."""
    user = _use_email_token(session, body.token, "verify_email", spent_ok=_email_confirmed)
    user.email_verified_at = user.email_verified_at or _now()
    session.commit()
    return _message("auth.email_confirmed")


@router.post("/password-reset", status_code=202, response_model=Message)
@limiter.limit(AUTH_LIMIT)
def request_password_reset(request: Request, body: ResetRequestIn, session: SessionDep) -> Message:
    user = session.scalar(select(User).where(User.email == body.email.lower()))
    if user is not None and not user.deleting:
        _mail_if_allowed(session, user.id, Template.reset_password)
        session.commit()
    return _message("auth.reset_accepted")


@router.post("/password-reset/confirm", response_model=Message)
@limiter.limit(AUTH_LIMIT)
def confirm_password_reset(request: Request, body: ResetConfirmIn, session: SessionDep) -> Message:
    user = _use_email_token(session, body.token, "reset_password")
    user.password_hash = hash_password(body.password)
    # Every existing session ends with the old password.
    revoke_refresh_tokens(session, RefreshToken.user_id == user.id)
    session.commit()
    clear_login_failures(user.email)  # the lock of too many wrong passwords ends with the old password
    return _message("auth.password_changed")
