"""A user's face data (biometric data: the photos, the pose photos, the likenesses made from them)
deleted with their files, for one likeness or, when the consent is withdrawn, all of it."""

import uuid
from collections.abc import Sequence
from typing import NamedTuple

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from shared import pending_objects, storage
from shared.contracts import GeneratePortraits
from shared.identity import lock_photo_set
from shared.jobs import transition
from shared.models import Job, JobStatus, Likeness, Photo, PosePhoto, User

ACTIVE = (JobStatus.queued, JobStatus.running)
# The stage of the jobs canceled with their likeness, saying why (shared/i18n.py `stage.*`).
LIKENESS_DELETED = "likeness deleted"
CONSENT_WITHDRAWN = "consent withdrawn"


def likeness_files(likeness: Likeness) -> str:
    """The prefix (ending in "*") of every object of the likeness: its LoRA files and checkpoints."""
    return storage.user_key(likeness.user_id, "likenesses", str(likeness.id)) + "/*"


def pose_files(pose: PosePhoto) -> str:
    """The prefix (ending in "*") of the pose photo's objects: the photo, its keypoints and drawings."""
    return storage.user_key(pose.user_id, "poses", str(pose.id)) + "*"


def cancel_jobs_of(session: Session, likeness: Likeness, stage: str = LIKENESS_DELETED) -> list[Job]:
    """Cancel the likeness's queued or running jobs, in the caller's transaction: the training that
    makes it and the portrait jobs that draw with it (a worker notices at its next progress report or
    heartbeat). Their stage says why: `stage`. Returns the jobs canceled, to publish once committed."""
    ids = session.scalars(
        select(Job.id).where(
            Job.user_id == likeness.user_id,
            Job.status.in_(ACTIVE),
            or_(
                Job.id == likeness.job_id,
                (Job.kind == GeneratePortraits.kind)
                & (Job.input["likeness_id"].as_string() == str(likeness.id)),
            ),
        )
    ).all()
    moved = (transition(session, job_id, set(ACTIVE), JobStatus.canceled, stage=stage) for job_id in ids)
    return [job for job in moved if job is not None]  # None: it ended meanwhile


class Withdrawal(NamedTuple):
    keys: list[str]  # the objects to delete once committed
    canceled: list[Job]  # the jobs canceled, to publish once committed
    photos: int
    poses: int
    likenesses: int
    had_consent: bool  # the account had given its consent (else there was none to withdraw)

    def sentence_key(self) -> str:
        """The catalogue's sentence for this withdrawal: it names only what happened (a repeat
        deletes nothing; portrait jobs are canceled with the trainings; an account that never
        consented, or already withdrew, is told so, not that it withdrew now)."""
        if self.canceled:
            return "consent.withdrawn_jobs"
        if self.photos or self.poses or self.likenesses:
            return "consent.withdrawn"
        return "consent.withdrawn_nothing" if self.had_consent else "consent.not_given"


def withdraw_consent(session: Session, user_id: uuid.UUID) -> Withdrawal:
    """Withdraw the user's consent to process face photos, in the caller's transaction: every photo,
    pose photo and likeness is deleted, their objects condemned (shared/pending_objects.py), the
    likenesses' queued or running jobs canceled, and `face_consent_at` cleared. Portraits stay.

    The user's row is locked FOR UPDATE first (`lock_photo_set`, as every writer of the photo set
    does before its rows): an upload holds it FOR SHARE from its consent check (`deps.hold_account`)
    to its commit, so an upload under way is waited for and its photos are deleted too, and a later
    one sees no consent (403)."""
    lock_photo_set(session, user_id)
    photos = session.scalars(select(Photo).where(Photo.user_id == user_id)).all()
    poses = session.scalars(select(PosePhoto).where(PosePhoto.user_id == user_id)).all()
    likenesses = session.scalars(select(Likeness).where(Likeness.user_id == user_id)).all()
    canceled = [job for lk in likenesses for job in cancel_jobs_of(session, lk, CONSENT_WITHDRAWN)]
    keys: list[str] = [p.object_key for p in photos]
    keys += [key for pose in poses for key in (pose.object_key, pose_files(pose))]
    keys += [likeness_files(likeness) for likeness in likenesses]
    rows: Sequence[object] = [*photos, *poses, *likenesses]
    for row in rows:
        session.delete(row)
    session.flush()
    pending_objects.condemn(session, keys)
    # Read again under the lock taken above, not the User the request loaded before it: of two
    # withdrawals at once, the second finds the consent already gone.
    user = session.get(User, user_id, populate_existing=True)
    had_consent = user is not None and user.face_consent_at is not None
    if user is not None:
        user.face_consent_at = None
    return Withdrawal(keys, canceled, len(photos), len(poses), len(likenesses), had_consent)
