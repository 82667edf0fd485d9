"""`send_email` (queue `notify`): one mail of a template to the job's owner (or, for
`data_erased`, to the address in the input, dropped once sent).

Every mail is built here, with its event key: one delivery per key (services/notifier/delivery.py),
so a repeated job never sends the same mail twice."""

from __future__ import annotations

import enum
import uuid

from pydantic import field_validator
from pydantic_core import PydanticCustomError

from shared.contracts.base import JobInput, JobKind, JobResult


class Template(enum.StrEnum):
    portraits_ready = "portraits_ready"
    training_finished = "training_finished"
    job_failed = "job_failed"
    verify_email = "verify_email"
    reset_password = "reset_password"
    signup_existing = "signup_existing"
    data_erased = "data_erased"


# Mails about the user's jobs: sent only to a verified address of a user who wants them.
RESULT_TEMPLATES = frozenset({Template.portraits_ready, Template.training_finished, Template.job_failed})


class SendEmail(JobInput):
    """Build it with the constructors below, which also choose the event key."""

    kind = "send_email"
    template: Template
    event_key: str | None = None  # default: job:<this job's id>:<template>
    job_id: uuid.UUID | None = None  # portraits_ready, job_failed
    likeness_id: uuid.UUID | None = None  # training_finished
    to: str | None = None  # data_erased: the user row is gone
    locale: str | None = None  # data_erased

    @field_validator("template", mode="before")
    @classmethod
    def _known_template(cls, value: object) -> object:
        if value not in Template.__members__.values():
            raise PydanticCustomError(
                "unknown_template", "There is no email template {template}.", {"template": value}
            )
        return value

    @classmethod
    def portraits_ready(cls, job_id: uuid.UUID) -> SendEmail:
        return cls(
            template=Template.portraits_ready, job_id=job_id, event_key=f"job:{job_id}:portraits_ready"
        )

    @classmethod
    def training_finished(cls, job_id: uuid.UUID, likeness_id: uuid.UUID) -> SendEmail:
        return cls(
            template=Template.training_finished,
            likeness_id=likeness_id,
            event_key=f"job:{job_id}:training_finished",
        )

    @classmethod
    def job_failed(cls, job_id: uuid.UUID) -> SendEmail:
        return cls(template=Template.job_failed, job_id=job_id, event_key=f"job:{job_id}:failed")

    @classmethod
    def account(cls, template: Template) -> SendEmail:
        """verify_email, reset_password, signup_existing: each request mails anew."""
        return cls(template=template, event_key=f"{template}:{uuid.uuid4()}")

    @classmethod
    def data_erased(cls, to: str, locale: str, subject: str) -> SendEmail:
        """`subject`: the erased user's hash (shared/security.py), never the id."""
        return cls(template=Template.data_erased, to=to, locale=locale, event_key=f"data_erased:{subject}")

    def key_for(self, job_id: uuid.UUID) -> str:
        """The delivery's event key: one mail per key."""
        return self.event_key or f"job:{job_id}:{self.template}"


class EmailSent(JobResult):
    sent: bool
    template: Template | None = None
    skipped: str | None = None  # why no mail went out (opted out, already sent, ...)
    message_id: str | None = None
    attempts: int | None = None  # SMTP tries
    inline_images: int | None = None


KIND = JobKind(
    SendEmail.kind,
    "notify.send",
    "notify",
    SendEmail,
    EmailSent,
    max_attempts=5,
    retry_base_seconds=30,  # the notifier already retries SMTP inside one attempt (about 3 minutes)
    # A mail server down for days is retried about hourly at most, as Postfix does
    # (maximal_backoff_time = 4000 s), for MAIL_OUTAGE_WINDOW_SECONDS (shared/jobs/retry.py).
    retry_max_seconds=4000,
    promises=tuple(f"mail `{t}`" for t in Template),
)
