"""Typed dependencies: a database session, the current user, the consent gate, the idempotency key."""

import uuid
from collections.abc import AsyncIterator
from typing import Annotated, TypeVar

from fastapi import Depends, Header, HTTPException, Query, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from services.gateway.api.language import Refusal
from shared.db import get_sessionmaker
from shared.models import User
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
bearer = HTTPBearer(auto_error=False)

U = TypeVar("U")
UNAUTHORIZED = Refusal(
    status.HTTP_401_UNAUTHORIZED, "auth.login_again", headers={"WWW-Authenticate": "Bearer"}
)


def check_signed_in(claims: AccessToken, user: U | None, *, erasing: bool = False) -> U:
    """`user`, unless 401: the token's user must still exist, not be being erased (unless `erasing`:
    the routes that show or repeat a pending erasure), and still have the password the token was
    issued under (a reset ends older tokens). `user`: a `User` or any row with its `password_hash`
    and `deleting`, or None."""
    if user is None or not claims.issued_under(user.password_hash):  # type: ignore[attr-defined]
        raise UNAUTHORIZED
    if user.deleting and not erasing:  # type: ignore[attr-defined]
        raise UNAUTHORIZED
    return user


def _user_of(request: Request, session: Session, token: str | None, *, erasing: bool = False) -> User:
    claims = decode_access_token(token) if token else None
    if claims is None:
        raise UNAUTHORIZED
    user = check_signed_in(claims, session.get(User, claims.user_id), erasing=erasing)
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
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            "Please agree to the processing of your face photos first (POST /v1/me/consent).",
        )
    return user


ConsentedUser = Annotated[User, Depends(get_consented_user)]


def get_idempotency_key(
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> str | None:
    return idempotency_key or None


IdempotencyKey = Annotated[str | None, Depends(get_idempotency_key)]


def not_found(what: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"{what} not found.")


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
