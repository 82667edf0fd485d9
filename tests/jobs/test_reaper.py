"""The reaper's final give-up: a training whose worker dies on every attempt ends `failed` with a
reason after its last attempt, the failure mail goes out, and the likeness is not left training."""

import pytest
from sqlalchemy import func, update

from shared.db import session_scope
from shared.models import User
from tests.conftest import Api, Platform, Processes, wait_until
from tests.jobs.test_worker_lifecycle import _job
from tests.notifier.test_notify_worker import mails_to
from tests.trainer.test_service import TRAIN_WORKER_ENV, mail_jobs, start, upload_accepted, user_id


@pytest.mark.slow  # ~90 s: three train worker starts and three stale timeouts
def test_a_task_that_kills_its_worker_every_time_fails_with_a_reason(
    api: Api, platform: Platform, procs: Processes
) -> None:
    user = api.new_user()
    with session_scope() as session:  # mail about jobs goes to confirmed addresses only
        session.execute(update(User).where(User.email == user.email).values(email_verified_at=func.now()))
    upload_accepted(api, user, 8)
    body = start(api, user).json()
    job_id, likeness_id = body["job"]["id"], body["likeness"]["id"]
    for attempt in (1, 2, 3):
        worker = procs.worker("train", **TRAIN_WORKER_ENV)
        wait_until(
            lambda a=attempt: (j := _job(job_id)).status == "running" and j.attempts == a,
            timeout=120,
            interval=0.05,
            what=f"attempt {attempt} running",
        )
        procs.kill(worker)  # SIGKILL the worker and its pool: the attempt's worker died

    job = api.wait_job(job_id, user, timeout=60)
    assert job["status"] == "failed" and job["attempts"] == job["max_attempts"] == 3, job
    assert job["error_code"] == "worker_lost"
    assert job["error_message"] == (
        "The worker running this job stopped 3 times, so we stopped trying. Please try again later."
    )
    likeness = api.get(f"/v1/likenesses/{likeness_id}", headers=user.auth).json()
    assert likeness["status"] == "failed"
    wait_until(
        lambda: [
            m for m in mails_to(platform, user.email) if m["Subject"].startswith("Something went wrong")
        ],
        timeout=60,
        what="the failure mail",
    )
    assert mail_jobs(user_id(api, user), "training_finished") == []
