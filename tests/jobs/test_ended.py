"""A job that ends without succeeding (failed for good, or canceled) leaves nothing transient behind
(shared/jobs/ended.py): its pose photo, photos or likeness take a final state with a reason, in the
transaction that ends the job, however it ended (the reaper, the runner, a cancel).

In-process on the real stack: job rows as a killed worker or a request leaves them, then the code
that ends them."""

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import func

from services.gateway.api.routes.poses import PoseOut
from shared import storage
from shared.db import get_sessionmaker, session_scope
from shared.i18n import current_locale
from shared.jobs.reaper import reap_stale_jobs
from shared.jobs.state import transition
from shared.localstack import LocalStack
from shared.models import Job, JobStatus, Likeness, LikenessStatus, Photo, PhotoStatus, PosePhoto
from tests import rows


def _pose(uid: uuid.UUID) -> uuid.UUID:
    pose_id = uuid.uuid4()
    with session_scope() as session:
        session.add(
            PosePhoto(
                id=pose_id, user_id=uid, object_key=storage.user_key(uid, "poses", f"{pose_id}.jpg"),
                content_type="image/jpeg", width=64, height=64, size_bytes=10, sha256="0" * 64,
                status="extracting",
            )
        )  # fmt: skip
    return pose_id


def _job(uid: uuid.UUID, kind: str, job_input: dict, *, dead_worker: bool = False) -> uuid.UUID:
    """A job row: `running` on its last attempt by a worker SIGKILLed a while ago (`dead_worker`),
    else `queued`."""
    job = Job(kind=kind, user_id=uid, input=job_input, max_attempts=3)
    if dead_worker:
        job.status, job.attempts, job.worker = JobStatus.running, 3, "photos-host:4242:dead"
        job.heartbeat_at, job.started_at = datetime.now(UTC) - timedelta(seconds=120), func.now()
    with session_scope() as session:
        session.add(job)
        session.flush()
        return job.id


def test_a_pose_whose_job_failed_for_good_is_rejected_with_a_sentence(stack: LocalStack) -> None:
    uid = rows.user()
    pose_id = _pose(uid)
    job_id = _job(uid, "pose_extract", {"pose_id": str(pose_id)}, dead_worker=True)

    with get_sessionmaker()() as session:
        reap_stale_jobs(session)

    with session_scope() as session:
        job_status = session.get(Job, job_id).status
        pose = session.get(PosePhoto, pose_id)
        assert job_status is JobStatus.failed  # the job ended: nothing will run it again
        assert (pose.status, pose.reason_code) == ("rejected", "extract_failed"), (
            f"the pose_extract job failed for good ({job_status}) but the pose photo reads "
            f"'{pose.status}' (reason {pose.reason!r})"
        )
        shown = PoseOut.of(pose)  # what GET /v1/poses/{id} answers
        token = current_locale.set("ko")
        try:
            shown_ko = PoseOut.of(pose)
        finally:
            current_locale.reset(token)
    assert shown.status == "rejected" and shown.reason and "upload it again" in shown.reason
    assert shown_ko.reason and shown_ko.reason != shown.reason  # the catalogue has it in Korean


def test_a_canceled_pose_job_leaves_the_pose_rejected_as_canceled(stack: LocalStack) -> None:
    uid = rows.user()
    pose_id = _pose(uid)
    job_id = _job(uid, "pose_extract", {"pose_id": str(pose_id)})
    with session_scope() as session:  # what POST /v1/jobs/{id}/cancel does
        assert transition(session, job_id, JobStatus.queued, JobStatus.canceled) is not None
    with session_scope() as session:
        pose = session.get(PosePhoto, pose_id)
        assert (pose.status, pose.reason_code) == ("rejected", "extract_canceled")


def test_a_photo_check_failed_at_once_rejects_its_unchecked_photos(stack: LocalStack) -> None:
    """A non-retryable error fails the job from the runner (not through the retries): the photos it
    did not get to are rejected `check_failed` too, so they can be uploaded again."""
    uid = rows.user()
    ids = [uuid.uuid4(), uuid.uuid4()]
    with session_scope() as session:
        for i, pid in enumerate(ids):
            session.add(
                Photo(
                    id=pid, user_id=uid, object_key=storage.user_key(uid, "photos", f"{pid}.jpg"),
                    content_type="image/jpeg", width=64, height=64, size_bytes=10, sha256=f"{i}" * 64,
                    status=PhotoStatus.accepted if i == 0 else PhotoStatus.checking,
                )
            )  # fmt: skip
    job_id = _job(uid, "photo_check", {"photo_ids": [str(p) for p in ids]})
    with session_scope() as session:  # as the runner's _finish for a JobError that is not retryable
        failed = transition(session, job_id, JobStatus.queued, JobStatus.failed, error_code="invalid_input")
        assert failed is not None
    with session_scope() as session:
        photos = [session.get(Photo, pid) for pid in ids]
        assert [(p.status, p.reason_code) for p in photos] == [
            (PhotoStatus.accepted, None),  # checked before the failure: kept
            (PhotoStatus.rejected, "check_failed"),
        ]


def test_a_training_failed_by_the_reaper_fails_its_likeness_at_once(stack: LocalStack) -> None:
    uid = rows.user()
    likeness_id = uuid.uuid4()
    job_id = _job(uid, "train_likeness", {"likeness_id": str(likeness_id)}, dead_worker=True)
    with session_scope() as session:
        session.add(
            Likeness(
                id=likeness_id, user_id=uid, job_id=job_id, class_word="person", trigger_word="sks",
                base_model="test", photo_ids=[],
            )
        )  # fmt: skip
    with get_sessionmaker()() as session:
        reap_stale_jobs(session)
    with session_scope() as session:  # no read of the likeness route needed to settle it
        assert session.get(Likeness, likeness_id).status == LikenessStatus.failed


def test_a_pose_settled_while_its_worker_ran_stays_settled(stack: LocalStack, monkeypatch) -> None:
    """The user cancels a pose extraction while the worker draws the skeleton: the job's end settles
    the pose `rejected` (extract_canceled), and the worker, past its last progress report, must not make it
    `ready` again nor leave its drawings behind."""
    from services.photos import poses
    from services.photos.poses import extract_pose_job, pose_keys
    from shared.jobs import run_job
    from tests.pictures import astronaut, jpeg

    storage.ensure_bucket()
    uid = rows.user()
    pose_id = _pose(uid)
    storage.put_bytes(storage.user_key(uid, "poses", f"{pose_id}.jpg"), jpeg(astronaut()), "image/jpeg")
    job_id = _job(uid, "pose_extract", {"pose_id": str(pose_id)})
    real_draw_pose = poses.draw_pose

    def canceled_meanwhile(*args):  # POST /v1/jobs/{id}/cancel after its last progress report
        with session_scope() as session:
            assert transition(session, job_id, JobStatus.running, JobStatus.canceled) is not None
        return real_draw_pose(*args)

    monkeypatch.setattr(poses, "draw_pose", canceled_meanwhile)
    run_job(job_id, extract_pose_job)
    with session_scope() as session:
        pose = session.get(PosePhoto, pose_id)
        assert (pose.status, pose.reason_code) == ("rejected", "extract_canceled")
    drawings = [k for role, k in pose_keys(uid, pose_id).items() if role != "photo"]
    assert not any(storage.exists(k) for k in drawings)


def test_a_job_whose_row_went_with_its_account_says_so(stack: LocalStack, caplog) -> None:  # noqa: ANN001
    """An erasure deletes every job row of the account, its own too: its end logged "was canceled
    or reassigned before it finished", which reads like a failure (a newcomer's finding)."""
    import logging

    from shared.contracts import EraseUser
    from shared.jobs.runner import JobContext, _finish

    uid = rows.user()
    job_id = rows.job(uid, "erase_user", running_on="photos:1:x")
    with session_scope() as session:
        session.execute(Job.__table__.delete().where(Job.id == job_id))
    ctx = JobContext(job_id, uid, "erase_user", EraseUser(), 1, 3, "photos:1:x")
    with caplog.at_level(logging.INFO, logger="shared.jobs.runner"):
        _finish(ctx, JobStatus.succeeded, result={}, progress=1.0, stage="done")
    assert f"job {job_id} ended after its row was deleted with its account" in caplog.text
    assert "reassigned" not in caplog.text
