"""The `photos` queue (CPU): erasure of a user and everything they own (`erase_user`, DELETE /v1/me)."""

import logging

from sqlalchemy import select

from shared import pending_objects, storage
from shared.contracts import EraseUser, SendEmail, UserErased
from shared.db import session_scope
from shared.jobs import JobContext, enqueue, events, job_task, transition
from shared.models import AuditEvent, Job, JobStatus, User
from shared.security import subject_hash

log = logging.getLogger(__name__)


@job_task(EraseUser)
def erase_user(ctx: JobContext[EraseUser]) -> UserErased:
    """Delete every object and row of a user, then the user (which deletes this job too).

    Safe to run again after a crash: objects are listed and deleted afresh, rows cascade. A writer
    that stores under the user's prefix meanwhile either committed before `deleting` was set (its
    objects are listed here) or sees it and leaves its objects to the sweep (shared/accounts.py).
    """
    user_id = ctx.user_id
    assert user_id is not None
    with session_scope() as session:  # stop the user's other work first: nothing new gets stored
        for job in session.scalars(
            select(Job).where(
                Job.user_id == user_id,
                Job.id != ctx.job_id,
                Job.status.in_([JobStatus.queued, JobStatus.running]),
            )
        ):
            canceled = transition(
                session,
                job.id,
                {JobStatus.queued, JobStatus.running},
                JobStatus.canceled,
                stage="account deleted",
            )
            if canceled is not None:  # a page following the job hears how it ended (at commit)
                events.publish(canceled)
    ctx.progress(0.1, "deleting files")
    deleted_objects = storage.delete_prefix(storage.user_prefix(user_id))
    ctx.progress(0.7, "deleting records")
    with session_scope() as session:
        user = session.get(User, user_id)
        if user is None:
            return UserErased(objects=deleted_objects)
        # The goodbye mail needs the address after the row is gone: it travels in the job input
        # and the notifier removes it once sent. The job has no owner, so no row links to the user.
        goodbye = SendEmail.data_erased(user.email, user.locale, subject_hash(user_id))
        enqueue(session, goodbye, user_id=None)
        session.add(
            AuditEvent(
                action="user_erased",
                subject_hash=subject_hash(user_id),
                detail={"objects_deleted": deleted_objects},
            )
        )
        session.delete(user)  # cascades: photos, jobs (this one too), likenesses, portraits, tokens
        # Every writer under the prefix holds the account (shared/accounts.py), so nothing it names
        # was written after the listing above. The prefix is listed once more by the scheduler's
        # next clean-up, committed with the delete and retried until S3 answers: one LIST of an
        # empty folder, which catches a writer of an older release still running in a deploy.
        pending_objects.condemn(session, [storage.user_prefix(user_id) + "*"])
    log.info("user erased", extra={"subject": subject_hash(user_id), "objects": deleted_objects})
    return UserErased(objects=deleted_objects)
