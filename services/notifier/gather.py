"""What goes into one email: read the rows and objects of *one* user and build the template data.

Every query is filtered by the owner (the user of the send_email job), and every object key must
lie under that user's prefix, so a mail can never carry another user's pictures or links.
"""

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import PurePosixPath
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from services.notifier import content
from services.notifier.compose import InlineImage, new_cid
from services.notifier.thumbnails import inline_thumbnail
from shared import storage
from shared.config import Settings
from shared.contracts import ErrorCode, SendEmail, Template
from shared.i18n import job_error_message
from shared.jobs import JobError
from shared.models import EmailToken, Job, JobStatus, Likeness, Portrait, User
from shared.security import new_opaque_token


class Skip(Exception):
    """This email should not be sent (opted out, nothing to say); `reason` says why."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass
class Draft:
    data: dict[str, Any]
    images: list[InlineImage] = field(default_factory=list)


def gather(
    session: Session,
    template: Template,
    user: User | None,
    job_input: SendEmail,
    settings: Settings,
    cid_domain: str,
) -> Draft:
    """The data of `template` for `user` (None only for data_erased, whose user is gone)."""
    public_url = settings.public_url
    if template == Template.data_erased:
        return Draft(content.data_erased_data(public_url))
    if user is None:
        raise JobError("no_recipient", f"A {template} email needs the user it is for.")
    if template == Template.portraits_ready:
        return _portraits_ready(session, user, _uuid(job_input.job_id, "job_id"), public_url, cid_domain)
    if template == Template.training_finished:
        likeness = session.scalar(
            select(Likeness).where(
                Likeness.id == _uuid(job_input.likeness_id, "likeness_id"), Likeness.user_id == user.id
            )
        )
        if likeness is None:
            raise Skip("likeness_gone")
        # The photos training really used (some chosen ones may have been set aside), else chosen.
        used = (likeness.meta or {}).get("photos_used", len(likeness.photo_ids or []))
        return Draft(content.training_finished_data(public_url, int(used)))
    if template == Template.job_failed:
        job = _owned_job(session, user, _uuid(job_input.job_id, "job_id"))
        if job.status != JobStatus.failed:
            raise Skip("job_not_failed")
        # The worker's sentences in the reader's language (shared/i18n.py), else its English text.
        message = job_error_message(job.error_code, job.error_message, job.result, user.locale)
        return Draft(content.job_failed_data(public_url, job.kind, job.error_code, message))
    if template == Template.verify_email:
        if user.email_verified_at is not None:
            raise Skip("already_verified")
        hours = settings.email_verify_hours
        token = issue_token(session, user, "verify_email", timedelta(hours=hours))
        return Draft(content.verify_email_data(public_url, token, hours))
    if template == Template.reset_password:
        minutes = settings.password_reset_minutes
        token = issue_token(session, user, "reset_password", timedelta(minutes=minutes))
        return Draft(content.reset_password_data(public_url, token, minutes))
    if template == Template.signup_existing:
        return Draft(content.signup_existing_data(public_url))
    raise JobError.of(ErrorCode.unknown_template, template=template)


def issue_token(session: Session, user: User, purpose: str, lifetime: timedelta) -> str:
    """A single-use token: only its sha256 is stored, and it replaces the user's unused ones."""
    session.execute(
        delete(EmailToken).where(
            EmailToken.user_id == user.id,
            EmailToken.purpose == purpose,
            EmailToken.used_at.is_(None),
        )
    )
    raw, hashed = new_opaque_token()
    session.add(
        EmailToken(
            user_id=user.id,
            purpose=purpose,
            token_hash=hashed,
            expires_at=datetime.now(UTC) + lifetime,
        )
    )
    return raw


def _portraits_ready(
    session: Session, user: User, job_id: uuid.UUID, public_url: str, cid_domain: str
) -> Draft:
    _owned_job(session, user, job_id)
    portraits = session.scalars(
        select(Portrait)
        .where(Portrait.job_id == job_id, Portrait.user_id == user.id)
        .order_by(Portrait.identity_score.desc().nulls_last(), Portrait.created_at, Portrait.id)
    ).all()
    if not portraits:
        raise Skip("no_portraits")
    prefix = storage.user_prefix(user.id)
    expires_at = datetime.now(UTC) + timedelta(days=content.DOWNLOAD_DAYS)
    items: list[content.PortraitItem] = []
    images: list[InlineImage] = []
    for portrait in portraits:
        for key in (portrait.object_key, portrait.thumb_key):
            if key is not None and not key.startswith(prefix):
                raise JobError.of(ErrorCode.foreign_object, what=f"Portrait {portrait.id}")
        number = len(items) + 1
        src = None
        if number <= content.INLINE_PICTURES:
            stored = storage.get_bytes_or_none(portrait.thumb_key or portrait.object_key)
            if stored is None:  # deleted since the rows were read (by its user, or an erasure)
                continue
            cid = new_cid(cid_domain)
            images.append(InlineImage(cid, inline_thumbnail(stored), filename=f"portrait-{number}.png"))
            src = f"cid:{cid}"
        suffix = PurePosixPath(portrait.object_key).suffix or ".png"
        url = storage.presign_get(
            portrait.object_key,
            content.DOWNLOAD_DAYS * 86400,
            filename=f"portrait-{number}{suffix}",
        )
        style = content.style_name(portrait.style, user.locale)
        items.append(content.PortraitItem(number, style, url, portrait.width, portrait.height, src))
    if not items:  # every picture is gone: an erasure is under way (it deletes files before rows)
        raise Skip("portraits_gone")
    data = content.portraits_ready_data(public_url, str(job_id), items, expires_at)
    return Draft(data, images)


def _owned_job(session: Session, user: User, job_id: uuid.UUID) -> Job:
    job = session.scalar(select(Job).where(Job.id == job_id, Job.user_id == user.id))
    if job is None:  # missing, or someone else's: the same answer, and nothing is sent
        raise JobError("not_found", f"Job {job_id} does not exist for this user.")
    return job


def _uuid(value: uuid.UUID | None, name: str) -> uuid.UUID:
    """A template's id, which its constructor (shared/contracts/send_email.py) always sets."""
    if value is None:
        raise JobError.of(ErrorCode.bad_input, detail=f"the email job needs a valid {name!r}.")
    return value
