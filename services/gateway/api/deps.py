"""Typed dependencies: a database session, the current user, the consent gate, the idempotency key."""

import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, NamedTuple, TypeVar

from fastapi import Depends, Header, Query, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import exists, select
from sqlalchemy.orm import Session
from sqlalchemy.sql import ColumnElement
from starlette.concurrency import run_in_threadpool

from services.gateway.api.language import Refusal
from shared import accounts
from shared.db import get_sessionmaker
from shared.models import RefreshToken, User
from shared.security import AccessToken, decode_access_token


async def get_db() -> AsyncIterator[Session]:
    """The request's session. Made on the event loop (no I/O until first used, so no thread hop);
    closed in a worker thread only when it holds a connection (closing then rolls back: a round trip)."""
    session = get_sessionmaker()()
    try:
        yield session
    finally:
        if session.in_transaction():
            await run_in_threadpool(session.close)
        else:
            session.close()


SessionDep = Annotated[Session, Depends(get_db)]


def hold_account(session: Session, user_id: uuid.UUID) -> None:
    """Lock the user's row FOR SHARE until the transaction ends, for a write that stores files (an
    upload, read after its slow body): an erasure asked for meanwhile (DELETE /v1/me sets `deleting`,
    then its job lists and deletes the user's files) waits for this write to commit, so its files are
    listed too; one asked for before is seen here, 401. Without it an upload that committed after the
    erasure listed the bucket left its photos behind, their rows gone with the account. The workers
    that store files take the same hold (shared/accounts.py).

    The consent is checked again under the hold (the uploads of face photos are its callers): a
    withdrawal (DELETE /v1/me/consent) locks the row FOR UPDATE, so it either waits for this upload
    and deletes its photos too, or came first: 403."""
    held = accounts.hold_account_reading(session, user_id, User.face_consent_at)  # one round trip
    if held is None:
        raise UNAUTHORIZED
    if held.face_consent_at is None:
        raise Refusal(status.HTTP_403_FORBIDDEN, "consent.required")


def release_connection(session: Session) -> None:
    """End the session's read-only transaction so its connection goes back to the pool; the session
    takes one again when next used (its objects stay loaded: expire_on_commit is off). For a route
    that waits on the client after its checks: an upload whose body came slowly held a connection
    for up to the body timeout, and a few such uploads took the pool from every other user."""
    session.commit()


bearer = HTTPBearer(auto_error=False)

U = TypeVar("U")


def _bearer_refusal(sentence_key: str) -> Refusal:
    """401 with `sentence_key` and the `WWW-Authenticate: Bearer` challenge (RFC 6750)."""
    return Refusal(status.HTTP_401_UNAUTHORIZED, sentence_key, headers={"WWW-Authenticate": "Bearer"})


UNAUTHORIZED = _bearer_refusal("auth.login_again")
# A token we signed whose user is gone (erased): logging in again would fail, so say why. Only a
# token that passed its signature check hears it; a garbage or forged one hears UNAUTHORIZED.
ACCOUNT_GONE = _bearer_refusal("auth.account_gone")
# A token of an account being erased: the erasure ended its sessions, and a login is refused (403).
SESSION_ERASING = _bearer_refusal("auth.session_erasing")
# No access token at all (no `Authorization: Bearer` header): nobody to ask to log in *again*.
NO_TOKEN = _bearer_refusal("auth.sign_in")


def session_live(session_id: Any = None) -> ColumnElement[bool]:
    """SQL: whether the sign-in session (refresh-token family) `session_id` of the row's user still
    has a live refresh token. Logout revokes the family, so the access tokens it issued (claim `sid`)
    end at once; a column of the same statement that reads the user, so still one round trip.
    `session_id`: a value, or a bindparam for a statement built once (services/gateway/api/reads.py)."""
    return (
        exists()
        .where(
            RefreshToken.family_id == session_id,
            RefreshToken.user_id == User.id,
            RefreshToken.revoked_at.is_(None),
        )
        .label("session_live")
    )


def check_signed_in(claims: AccessToken, row: U | None, *, erasing: bool = False) -> U:
    """`row`, unless 401: the token's user must still exist, still have the password the token was
    issued under (a reset ends older tokens), its session must not be logged out, and the account
    must not be being erased. With `erasing` (the routes that show or repeat a pending erasure), an
    account being erased passes, though asking for the erasure revoked its sessions. `row`: any row
    with the user's `password_hash`, `deleting` and `session_live` (see session_live), or None (the
    user is gone: ACCOUNT_GONE, as `claims` passed their signature check)."""
    if row is None:
        raise ACCOUNT_GONE
    if not claims.issued_under(row.password_hash):  # type: ignore[attr-defined]
        raise UNAUTHORIZED
    if row.deleting:  # type: ignore[attr-defined]
        if not erasing:
            raise SESSION_ERASING
    elif not row.session_live:  # type: ignore[attr-defined]
        raise UNAUTHORIZED
    return row


class _Signed(NamedTuple):
    password_hash: str
    deleting: bool
    session_live: bool


def _user_of(request: Request, session: Session, token: str | None, *, erasing: bool = False) -> User:
    if not token:
        raise NO_TOKEN
    claims = decode_access_token(token)
    if claims is None:
        raise UNAUTHORIZED
    row = session.execute(
        select(User, session_live(claims.session_id)).where(User.id == claims.user_id)
    ).first()
    if row is None:
        raise ACCOUNT_GONE
    user, live = row
    check_signed_in(claims, _Signed(user.password_hash, user.deleting, live), erasing=erasing)
    request.state.user_id = user.id
    return user


def get_current_user(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> User:
    """The signed-in user from `Authorization: Bearer <access token>`; 401 otherwise.

    A token in the query string is not accepted here: URLs end up in logs, histories and Referer
    headers. Only the event stream (`StreamUser`) takes one, because EventSource cannot send headers.
    """
    return _user_of(request, session, credentials.credentials if credentials else None)


def get_stream_user(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    access_token: Annotated[str | None, Query(include_in_schema=False)] = None,
) -> User:
    """As `get_current_user`, but also from `?access_token=` (browsers' EventSource sends no
    headers). The query token is redacted from every log line (shared/logging_setup.py)."""
    return _user_of(request, session, credentials.credentials if credentials else access_token)


def get_account_user(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> User:
    """As `get_current_user`, but also an account being erased (`deleting`): only for reading the
    account (its pending erasure) and asking again for its erasure."""
    return _user_of(request, session, credentials.credentials if credentials else None, erasing=True)


StreamUser = Annotated[User, Depends(get_stream_user)]
CurrentUser = Annotated[User, Depends(get_current_user)]
AccountUser = Annotated[User, Depends(get_account_user)]


def get_consented_user(user: CurrentUser) -> User:
    if user.face_consent_at is None:
        raise Refusal(status.HTTP_403_FORBIDDEN, "consent.required")
    return user


ConsentedUser = Annotated[User, Depends(get_consented_user)]


def get_idempotency_key(
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> str | None:
    return idempotency_key or None


IdempotencyKey = Annotated[str | None, Depends(get_idempotency_key)]


def not_found(what: str) -> Refusal:
    """404 with the catalogue's `not_found.<what>` (shared/i18n.py), e.g. `Job` -> "Job not found."."""
    return Refusal(status.HTTP_404_NOT_FOUND, f"not_found.{what.lower()}")


def conflict(key: str, **values: object) -> Refusal:
    """409 with the catalogue's sentence `key` (shared/i18n.py) in the request's language."""
    return Refusal(status.HTTP_409_CONFLICT, key, **values)


T = TypeVar("T")


def owned(session: Session, model: type[T], object_id: uuid.UUID, user: User, what: str) -> T:
    """Fetch an object of the current user; another user's id is simply not found (404)."""
    obj = session.get(model, object_id)
    if obj is None or getattr(obj, "user_id", None) != user.id:
        raise not_found(what)
    return obj
