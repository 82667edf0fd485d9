"""`erase_user` (queue `photos`): every object and row of a user, then the user (DELETE /v1/me)."""

from __future__ import annotations

from shared.contracts.base import JobInput, JobKind, JobResult


class EraseUser(JobInput):
    kind = "erase_user"  # the user is the job's owner (`Job.user_id`)


class UserErased(JobResult):
    objects: int


KIND = JobKind(
    EraseUser.kind,
    "photos.erase_user",
    "photos",
    EraseUser,
    UserErased,
    max_attempts=10,
    retry_max_seconds=300,  # erasure must finish; the scheduler also starts it again
    promises=("mail `data_erased`", "AuditEvent `user_erased`"),
)
