"""The `send_email` job (task `notify.send`, queue `notify`).

Input and result: shared/contracts/send_email.py (the template's ids: see gather.py). Three short
transactions, none open while the SMTP server is talked to (services/notifier/delivery.py):

1. check the user; skip if the event's mail was sent, wait while another live attempt sends it
   (both learnt before anything is gathered); gather the data of this user only, claim the
   event's delivery row (`sending`, with the event's Message-ID) and commit;
2. render and send (with retries);
3. record `sent` (or the failure), retried through a database outage: a mail the SMTP server
   accepted is never sent again because Postgres was away when it was to be recorded.

A failed send fails the job with the SMTP reply. The one case a mail goes out twice: the process
dies (or Postgres stays away past the outage window) between the server's 250 and the record; the
next attempt cannot know whether it went and sends it again with the same Message-ID.
"""

import logging
import time
from dataclasses import dataclass
from email.errors import HeaderParseError, MessageDefect
from email.message import EmailMessage

from sqlalchemy.orm import Session

from services.notifier.compose import compose_message, message_id_for, sender_domain
from services.notifier.delivery import (
    BUSY,
    FAILED,
    SENT,
    SKIPPED,
    Claim,
    Sender,
    claim_delivery,
    look_up_delivery,
    mark_sent,
    release_delivery,
)
from services.notifier.gather import Draft, Skip, gather
from services.notifier.render import render_email
from services.notifier.smtp import SmtpConfig, SmtpSendError, send_message
from shared.config import Settings, get_settings
from shared.contracts import EmailSent, SendEmail, Template
from shared.contracts.send_email import RESULT_TEMPLATES
from shared.db import session_scope
from shared.jobs import JobContext, JobError, job_task
from shared.jobs.ended import forget_recipient
from shared.jobs.runner import outlasting_database_outages
from shared.models import Job, User

log = logging.getLogger(__name__)

# How often a run whose event another live attempt is sending looks again (it waits for that one).
BUSY_POLL_SECONDS = 1.0


@dataclass(frozen=True)
class _Claimed:
    """A delivery this attempt claimed (committed `sending`), with what the mail needs."""

    draft: Draft
    to: str
    locale: str
    claim: Claim


@job_task(SendEmail)
def send_email(ctx: JobContext[SendEmail]) -> EmailSent:
    """Send the mail of `ctx.input` once per event key (see the module's docstring).

    Raises JobError(`smtp_failed`) when the SMTP server refused the mail or did not answer
    (retryable for a transient failure), and the database's error when Postgres stays away past
    the outage window while the outcome is recorded."""
    template = ctx.input.template
    event_key = ctx.input.key_for(ctx.job_id)
    settings = get_settings()
    domain = sender_domain(settings.smtp_from)
    message_id = message_id_for(event_key, domain)  # the same for every attempt: a resend is recognisable
    sender = Sender(ctx.job_id, ctx.worker)
    while (prepared := _claim(ctx, event_key, message_id, sender, settings, domain)) is None:
        ctx.check_canceled()
        time.sleep(BUSY_POLL_SECONDS)  # another attempt is sending it: wait for its outcome
    if isinstance(prepared, EmailSent):
        return prepared
    draft, to = prepared.draft, prepared.to
    if prepared.claim.outcome_unknown:
        log.warning(
            "email %s: an earlier attempt ended without recording whether it was sent; sending it "
            "again with the same Message-ID",
            template,
            extra={"job_id": str(ctx.job_id)},
        )

    failure: SmtpSendError | None = None
    try:
        message = _message(template, draft, to, prepared.locale, settings.smtp_from, message_id)
        attempts = send_message(message, SmtpConfig.from_settings(settings))
    except (MessageDefect, HeaderParseError) as exc:  # e.g. NonASCIILocalPartDefect: never sendable
        failure = SmtpSendError(
            f"The address cannot be written in a mail header ({exc}).",
            code=None,
            transient=False,
            attempts=0,
        )
    except SmtpSendError as exc:
        failure = exc
    # A mail server that does not answer or answers 4xx is an outage: waited out for days
    # (MAIL_OUTAGE_WINDOW_SECONDS, shared/jobs/retry.py), not five attempts and lost.
    retry = failure is not None and failure.transient
    reason = None if failure is None else _without(str(failure), to)
    # not retry: the job ends here, so keep no address in it
    _record(ctx, event_key, sender, message_id, reason, forget_address=not retry)
    if reason is not None:
        log.warning("email %s not sent: %s", template, reason, extra={"job_id": str(ctx.job_id)})
        # A mail server that is down or busy (no reply, 4xx) gets another job attempt later; a
        # permanent refusal (5xx, no SMTPUTF8, an address no header can carry) is final.
        raise JobError(
            "smtp_failed", f"The email could not be sent. {reason}", outage="mail" if retry else None
        )
    log.info("email %s sent", template, extra={"job_id": str(ctx.job_id), "attempts": attempts})
    return EmailSent(
        sent=True,
        template=template,
        message_id=message_id,
        attempts=attempts,
        inline_images=len(draft.images),
    )


def _claim(
    ctx: JobContext[SendEmail],
    event_key: str,
    message_id: str,
    sender: Sender,
    settings: Settings,
    domain: str,
) -> _Claimed | EmailSent | None:
    """In one short transaction: the user's checks, the mail's data and the delivery's claim.

    Returns what to send, or the job's result when there is nothing to send, or None while another
    attempt that still runs is sending the event's mail (nothing gathered then, or kept if that
    attempt claimed the row while this one gathered)."""
    template = ctx.input.template
    with session_scope() as session:
        user = session.get(User, ctx.user_id) if ctx.user_id else None
        if template != Template.data_erased:
            if user is None:
                return _skipped(template, "user_gone")  # erased since: nobody to write to
            if user.deleting:
                return _skipped(template, "user_deleting")
            if template in RESULT_TEMPLATES:
                if not user.email_results:
                    return _skipped(template, "email_results_off")
                if user.email_verified_at is None:
                    return _skipped(template, "address_not_verified")
        to, locale = _recipient(template, user, ctx.input)
        # Before gathering: a duplicate run, or a pass of one waiting for another attempt (every
        # BUSY_POLL_SECONDS for as long as that one sends), costs no S3 read and no token.
        if (taken := look_up_delivery(session, event_key, sender)) is not None:
            return _not_ours(session, ctx, taken)
        try:
            draft: Draft | None = gather(session, template, user, ctx.input, settings, domain)
            skip = None
        except Skip as skipped:
            draft, skip = None, skipped.reason
        # Claimed last, so the row lock lasts only until the commit below.
        claim = claim_delivery(
            session,
            event_key=event_key,
            template=template,
            user_id=user.id if user else None,
            message_id=message_id,
            sender=sender,
        )
        if claim.status != SENT and claim.status != BUSY:
            if skip is not None:
                release_delivery(session, event_key, sender, SKIPPED, skip)
                return _skipped(template, skip)
            assert draft is not None
            return _Claimed(draft, to, locale, claim)
        session.rollback()  # what gather wrote (a sign-in token) is for a mail that is not sent
        return _not_ours(session, ctx, claim)


def _not_ours(session: Session, ctx: JobContext[SendEmail], claim: Claim) -> EmailSent | None:
    """The job's result when `claim` says the mail was sent; None while another attempt sends it."""
    if claim.status == BUSY:
        return None
    _forget_address(session, ctx)
    return EmailSent(sent=False, skipped="already_sent", message_id=claim.message_id)


@outlasting_database_outages
def _record(
    ctx: JobContext[SendEmail],
    event_key: str,
    sender: Sender,
    message_id: str,
    failure: str | None,
    *,
    forget_address: bool,
) -> None:
    """Record the send's outcome (and forget the address if the job ends), in its own transaction.

    Retried while Postgres does not answer, for up to JOB_OUTAGE_WINDOW_SECONDS; then raises the
    database's error (the row stays `sending`: the next attempt sends again, same Message-ID)."""
    with session_scope() as session:
        if failure is None:
            mark_sent(session, event_key, message_id)
        else:
            release_delivery(session, event_key, sender, FAILED, failure)
        if forget_address:
            _forget_address(session, ctx)


def _recipient(template: Template, user: User | None, job_input: SendEmail) -> tuple[str, str]:
    if template == Template.data_erased:  # the user row is gone; the address travels in the input
        if not job_input.to:
            raise JobError("no_recipient", "The data_erased email needs the address in 'to'.")
        return job_input.to, job_input.locale or "en"
    assert user is not None
    return user.email, user.locale


def _message(
    template: Template, draft: Draft, to: str, locale: str, sender: str, message_id: str
) -> EmailMessage:
    email = render_email(template, locale, draft.data)
    return compose_message(
        sender=sender,
        to=to,
        subject=email.subject,
        text=email.text,
        html=email.html,
        images=draft.images,
        message_id=message_id,
        locale=email.locale,
    )


def _forget_address(session: Session, ctx: JobContext[SendEmail]) -> None:
    """Drop a mailed address from the job input once it is no longer needed."""
    if ctx.input.to is None:
        return
    job = session.get(Job, ctx.job_id)
    if job is not None:
        forget_recipient(session, job)


def _skipped(template: Template, reason: str) -> EmailSent:
    return EmailSent(sent=False, template=template, skipped=reason)


def _without(text: str, address: str) -> str:
    """`text` with the recipient's address taken out (a server's reply may quote it)."""
    return text.replace(address, "<recipient>")
