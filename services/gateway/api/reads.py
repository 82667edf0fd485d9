"""Signed-in reads in one database round trip: the answers a busy service gives most (job status
polling, the account).

The general path (`CurrentUser` + `SessionDep` + a sync route) costs four thread hops, a pool
pre-check, `BEGIN`, two ORM queries, `ROLLBACK` and a second validation of the response model. These
reads check the token on the event loop, then run ONE autocommit statement (the user's auth columns
joined with the object asked for) on the event loop too, through psycopg's async pool
(shared/db_async.py: no worker thread, no SQLAlchemy execution), and answer with the response
model's JSON directly. The rules are the same functions the general path uses
(`deps.check_signed_in`, `owned`'s "another user's id is not found"); `bench/gateway_load.py` measures
both paths in one run.
"""

import uuid
from typing import Annotated, Any

from fastapi import Depends, Request, Response
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy import and_, bindparam, select

from services.gateway.api.deps import NO_TOKEN, UNAUTHORIZED, bearer, check_signed_in, not_found, session_live
from services.gateway.api.schemas import JobOut, UserOut
from shared.db_async import first_row
from shared.models import Job, User
from shared.security import AccessToken, decode_access_token

# Built once with bound parameters, compiled once to psycopg's SQL (shared/db_async.py): building
# and cache-keying a statement per request costs more CPU than the database's answer. The signed-in
# user's auth columns (deps.check_signed_in) come first, with whether the token's sign-in session is
# still live (logout ends it).
_AUTH = (User.password_hash, User.deleting, session_live(bindparam("session_id")))
_JOB = (
    # JobOut's columns (`stage_text` is computed from `stage`, in the reader's language)
    select(*_AUTH, *(Job.__table__.c[name] for name in JobOut.model_fields if name in Job.__table__.c))
    .select_from(User)
    .outerjoin(Job, and_(Job.id == bindparam("job_id"), Job.user_id == User.id))
    .where(User.id == bindparam("user_id"))
)
_USER = select(*User.__table__.c, _AUTH[-1]).where(User.id == bindparam("user_id"))


async def access_claims(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> AccessToken:
    """The claims of `Authorization: Bearer <access token>` (signature, expiry, type); 401 otherwise.
    Records the user for the per-account rate limits, as `get_current_user` does. Async on purpose:
    FastAPI runs a plain `def` dependency in a worker thread, a hop that costs more than the check."""
    if credentials is None or not credentials.credentials:
        raise NO_TOKEN
    claims = decode_access_token(credentials.credentials)
    if claims is None:
        raise UNAUTHORIZED
    request.state.user_id = claims.user_id
    return claims


Claims = Annotated[AccessToken, Depends(access_claims)]


def json_response(model: Any) -> Response:
    """A pydantic model as the JSON body FastAPI would write for it (no second validation)."""
    return Response(model.model_dump_json(), media_type="application/json")


async def read_job(claims: AccessToken, job_id: uuid.UUID) -> Response:
    """GET /v1/jobs/{id}: the job of the signed-in user as `JobOut`; 401 for a token that no longer
    holds (user gone, being erased, password changed), 404 for an id that is not theirs."""
    row = check_signed_in(
        claims,
        await first_row(_JOB, {"job_id": job_id, "user_id": claims.user_id, "session_id": claims.session_id}),
    )
    if row.id is None:
        raise not_found("Job")
    return json_response(JobOut.of(row))  # type: ignore[arg-type]  # a Row has the Job's attributes


async def read_me(claims: AccessToken) -> Response:
    """GET /v1/me: the signed-in user's account as `UserOut`, also while its erasure is pending (it
    shows `erasing_since`); 401 as `read_job` otherwise."""
    row = check_signed_in(
        claims,
        await first_row(_USER, {"user_id": claims.user_id, "session_id": claims.session_id}),
        erasing=True,
    )
    return json_response(UserOut.of(row))  # type: ignore[arg-type]  # a Row has the User's attributes
