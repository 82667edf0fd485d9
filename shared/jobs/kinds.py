"""Every kind of job, the Celery task that runs it and its queue: declared once, here."""

import enum
from dataclasses import dataclass


@dataclass(frozen=True)
class JobKind:
    name: str
    task_name: str
    queue: str
    max_attempts: int | None = None  # None: the JOB_MAX_ATTEMPTS setting
    mail_on_failure: bool = False  # tell the user, in words, when the job finally fails


KINDS: dict[str, JobKind] = {
    k.name: k
    for k in [
        JobKind("photo_check", "photos.check", "photos"),
        JobKind("erase_user", "photos.erase_user", "photos", max_attempts=10),
        JobKind("retention_sweep", "photos.retention_sweep", "photos"),
        JobKind("pose_extract", "photos.pose", "photos"),
        JobKind("train_likeness", "train.likeness", "train", mail_on_failure=True),
        JobKind("generate_portraits", "generate.portraits", "generate", mail_on_failure=True),
        JobKind("send_email", "notify.send", "notify", max_attempts=5),
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
