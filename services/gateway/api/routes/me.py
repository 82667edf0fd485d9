"""The current account: profile, settings, consent, and erasure of everything."""

from datetime import UTC, datetime

from fastapi import APIRouter

from services.gateway.api.deps import AccountUser, CurrentUser, SessionDep
from services.gateway.api.routes.auth import revoke_refresh_tokens
from services.gateway.api.schemas import ConsentIn, ErasureOut, UserOut, UserPatch
from shared.jobs import enqueue
from shared.models import RefreshToken

router = APIRouter(prefix="/me", tags=["account"])


@router.get("", response_model=UserOut)
def read_me(user: AccountUser) -> UserOut:
    """The account; `erasing_since` is set while its erasure is under way (with a token issued
    before it was asked for)."""
    return UserOut.of(user)


@router.patch("", response_model=UserOut)
def update_me(body: UserPatch, user: CurrentUser, session: SessionDep) -> UserOut:
    for field, value in body.model_dump(exclude_none=True).items():
        setattr(user, field, value)
    session.commit()
    return UserOut.of(user)


@router.post("/consent", response_model=UserOut)
def give_consent(body: ConsentIn, user: CurrentUser, session: SessionDep) -> UserOut:
    """Record the explicit consent to process face photos (biometric data), with its time."""
    user.face_consent_at = user.face_consent_at or datetime.now(UTC)
    session.commit()
    return UserOut.of(user)


@router.delete("", status_code=202, response_model=ErasureOut)
def erase_me(user: AccountUser, session: SessionDep) -> ErasureOut:
    """Erase the account: every row and every stored object. Idempotent: a repeat returns the same
    job. The erasure always completes: its job outlasts outages, and the scheduler starts it again
    if it still failed (shared/scheduler.py `resume_erasures`)."""
    job = enqueue(session, kind="erase_user", user_id=user.id, input={}, idempotency_key=f"erase:{user.id}")
    user.deleting = True  # no new logins or requests from now on
    user.deleting_since = user.deleting_since or datetime.now(UTC)
    revoke_refresh_tokens(session, RefreshToken.user_id == user.id)
    session.commit()
    return ErasureOut(
        detail="Your account and all your photos, models and portraits are being deleted.",
        job_id=job.id,
    )
