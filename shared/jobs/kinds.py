"""Every kind of job, the Celery task that runs it and its queue: declared once, here."""

import enum
from dataclasses import dataclass


@dataclass(frozen=True)
class JobKind:
    """A kind of job. A failed attempt is retried after `retry_base_seconds` x 2^(attempt-1), at
    most `retry_max_seconds`, jittered (shared/jobs/retry.py `backoff`; ARCHITECTURE.md, "The job
    contract")."""

    name: str
    task_name: str
    queue: str
    max_attempts: int | None = None  # None: the JOB_MAX_ATTEMPTS setting
    mail_on_failure: bool = False  # tell the user, in words, when the job finally fails
    retry_base_seconds: float = 2.0
    retry_max_seconds: float = 60.0


KINDS: dict[str, JobKind] = {
    k.name: k
    for k in [
        # CPU checks the user waits for: retry soon.
        JobKind("photo_check", "photos.check", "photos"),
        JobKind("pose_extract", "photos.pose", "photos"),
        # Erasure must finish: many attempts, and the scheduler starts it again if it still failed.
        JobKind("erase_user", "photos.erase_user", "photos", max_attempts=10, retry_max_seconds=300),
        JobKind(
            "retention_sweep",
            "photos.retention_sweep",
            "photos",
            retry_base_seconds=30,
            retry_max_seconds=600,
        ),
        # GPU work: a retry costs a model load, so wait longer between attempts.
        JobKind(
            "train_likeness",
            "train.likeness",
            "train",
            mail_on_failure=True,
            retry_base_seconds=10,
            retry_max_seconds=300,
        ),
        JobKind(
            "generate_portraits",
            "generate.portraits",
            "generate",
            mail_on_failure=True,
            retry_base_seconds=10,
            retry_max_seconds=300,
        ),
        # The notifier already retries SMTP inside one attempt (about 3 minutes).
        JobKind(
            "send_email",
            "notify.send",
            "notify",
            max_attempts=5,
            retry_base_seconds=30,
            retry_max_seconds=600,
        ),
    ]
}

# The kinds as a closed set, for APIs that take a kind (an unknown one is a 422, not a query).
JobKindName = enum.StrEnum("JobKindName", {k: k for k in KINDS})

QUEUES = ("photos", "train", "generate", "notify")


def get_kind(name: str) -> JobKind:
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"unknown job kind {name!r}; known: {', '.join(KINDS)}") from None
