"""The `send_email` job (task `notify.send`, queue `notify`).

Input and result: shared/contracts/send_email.py (the template's ids: see gather.py). One
transaction per run: lock the event's delivery row, skip if it was sent, gather the data of this
user only, render, send (with retries), record. A failed send fails the job with the SMTP reply.
"""

import logging
from email.errors import HeaderParseError, MessageDefect
from email.message import EmailMessage

from sqlalchemy.orm import Session

from services.notifier.compose import compose_message, message_id_for, sender_domain
from services.notifier.delivery import FAILED, SENT, SKIPPED, claim_delivery, mark_not_sent, mark_sent
from services.notifier.gather import Draft, Skip, gather
from services.notifier.render import render_email
from services.notifier.smtp import SmtpConfig, SmtpSendError, send_message
from shared.config import get_settings
from shared.contracts import EmailSent, SendEmail, Template
from shared.contracts.send_email import RESULT_TEMPLATES
from shared.db import session_scope
from shared.jobs import JobContext, JobError, job_task
from shared.models import Job, User

log = logging.getLogger(__name__)


@job_task(SendEmail)
def send_email(ctx: JobContext[SendEmail]) -> EmailSent:
    """Send the mail of `ctx.input` once per event key (see the module's docstring)."""
    template = ctx.input.template
    event_key = ctx.input.key_for(ctx.job_id)
    settings = get_settings()
    domain = sender_domain(settings.smtp_from)
    failure: SmtpSendError | None = None
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

        delivery = claim_delivery(
            session, event_key=event_key, template=template, user_id=user.id if user else None
        )
        if delivery.status == SENT:
            _forget_address(session, ctx)
            return EmailSent(sent=False, skipped="already_sent", message_id=delivery.message_id)
        try:
            draft = gather(session, template, user, ctx.input, settings, domain)
        except Skip as skip:
            mark_not_sent(delivery, SKIPPED, skip.reason)
            return _skipped(template, skip.reason)

        try:
            message = _message(
                template, draft, to, locale, settings.smtp_from, message_id_for(event_key, domain)
            )
            attempts = send_message(message, SmtpConfig.from_settings(settings))
        except (MessageDefect, HeaderParseError) as exc:  # e.g. NonASCIILocalPartDefect: never sendable
            failure = SmtpSendError(
                f"The address cannot be written in a mail header ({exc}).",
                code=None,
                transient=False,
                attempts=0,
            )
            mark_not_sent(delivery, FAILED, _without(str(failure), to))
        except SmtpSendError as exc:
            failure = exc
            mark_not_sent(delivery, FAILED, _without(str(exc), to))
        else:
            mark_sent(delivery, message["Message-ID"])
        retry = failure is not None and failure.transient and not ctx.is_last_attempt
        if not retry:
            _forget_address(session, ctx)  # the job ends here: keep no address in it
    if failure is not None:
        reason = _without(str(failure), to)
        log.warning("email %s not sent: %s", template, reason, extra={"job_id": str(ctx.job_id)})
        # A mail server that is down or busy (no reply, 4xx) gets another job attempt later; a
        # permanent refusal (5xx, no SMTPUTF8, an address no header can carry) is final.
        raise JobError("smtp_failed", f"The email could not be sent. {reason}", retryable=retry)
    log.info("email %s sent", template, extra={"job_id": str(ctx.job_id), "attempts": attempts})
    return EmailSent(
        sent=True,
        template=template,
        message_id=message["Message-ID"],
        attempts=attempts,
        inline_images=len(draft.images),
    )


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
    if job is not None and "to" in (job.input or {}):
        job.input = {k: v for k, v in job.input.items() if k != "to"}


def _skipped(template: Template, reason: str) -> EmailSent:
    return EmailSent(sent=False, template=template, skipped=reason)


def _without(text: str, address: str) -> str:
    """`text` with the recipient's address taken out (a server's reply may quote it)."""
    return text.replace(address, "<recipient>")
