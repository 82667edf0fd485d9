"""The current account: profile, settings, consent (given and withdrawn), and erasure of everything."""

from datetime import UTC, datetime

from fastapi import APIRouter, Response

from services.gateway.api import face_data, reads
from services.gateway.api.deletion import deleted_files
from services.gateway.api.deps import AccountUser, CurrentUser, SessionDep
from services.gateway.api.reads import Claims
from services.gateway.api.schemas import ConsentIn, ConsentWithdrawnOut, ErasureOut, UserOut, UserPatch
from services.gateway.refresh_tokens import revoke_refresh_tokens
from shared.contracts import EraseUser
from shared.i18n import current_locale, say
from shared.jobs import enqueue, events
from shared.models import RefreshToken

router = APIRouter(prefix="/me", tags=["account"])


@router.get("", response_model=UserOut)
async def read_me(claims: Claims) -> Response:
    """The account; `erasing_since` is set while its erasure is under way (with a token issued
    before it was asked for).
    \f
    One database round trip (services/gateway/api/reads.py)."""
    return await reads.read_me(claims)


@router.patch("", response_model=UserOut)
def update_me(body: UserPatch, user: CurrentUser, session: SessionDep) -> UserOut:
    """Change the fields sent; the others keep their values (a null is a 422).
    \f
    The null rule: schemas.Patch."""
    for field, value in body.model_dump(exclude_unset=True).items():
        setattr(user, field, value)
    session.commit()
    return UserOut.of(user)


@router.post("/consent", response_model=UserOut)
def give_consent(body: ConsentIn, user: CurrentUser, session: SessionDep) -> UserOut:
    """Record the explicit consent to process face photos (biometric data), with its time."""
    user.face_consent_at = user.face_consent_at or datetime.now(UTC)
    session.commit()
    return UserOut.of(user)


@router.delete(
    "/consent",
    response_model=ConsentWithdrawnOut,
    responses={202: {"model": ConsentWithdrawnOut, "description": "withdrawn; files deleted later"}},
)
def withdraw_consent(user: CurrentUser, session: SessionDep) -> Response:
    """Withdraw the consent to process face photos (GDPR Art. 7(3): as easy as giving it). Every
    photo, pose photo and likeness of the account is deleted with its files, and their trainings and
    portrait jobs still under way are canceled; portraits already made stay (delete them on their
    own), as does the account. Uploads need the consent again. 200 with a sentence and the counts,
    or 202 while S3 is down (the files are deleted once it answers). Idempotent (then all zero)."""
    done = face_data.withdraw_consent(session, user.id)
    session.commit()
    for job in done.canceled:
        events.publish(job)
    out = ConsentWithdrawnOut(
        detail=say(done.sentence_key(), current_locale.get()), photos=done.photos, poses=done.poses,
        likenesses=done.likenesses, jobs_canceled=len(done.canceled),
    )  # fmt: skip
    return deleted_files(done.keys, out.model_dump())


@router.delete("", status_code=202, response_model=ErasureOut)
def erase_me(user: AccountUser, session: SessionDep) -> ErasureOut:
    """Erase the account: every row and every stored object. A repeat while the erasure runs
    returns the same job; once it is done the account is gone, and its token hears 401 ("This
    account no longer exists"). The erasure always completes: its job outlasts outages, and it is
    started again if it still failed.
    \f
    The restart: shared/scheduler.py `resume_erasures`."""
    job = enqueue(session, EraseUser(), user_id=user.id, idempotency_key=f"erase:{user.id}")
    user.deleting = True  # no new logins or requests from now on
    user.deleting_since = user.deleting_since or datetime.now(UTC)
    revoke_refresh_tokens(session, RefreshToken.user_id == user.id)
    session.commit()
    return ErasureOut(
        detail=say("me.erasing", current_locale.get()),
        job_id=job.id,
    )
