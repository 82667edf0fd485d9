"""Celery's soft time limit fires once, wherever the attempt is: when it lands in the runner's own
bookkeeping after the handler (recording the end), the end is still recorded and the job does not
sit `running` until the reaper calls its worker lost (seen in CI on a loaded 2-core machine)."""

import uuid

import pytest
from celery.exceptions import SoftTimeLimitExceeded

from shared.contracts import PhotosChecked
from shared.db import session_scope
from shared.jobs import runner
from shared.models import Job, JobStatus
from tests.jobs.test_failures import _job_row


def _queued_job() -> uuid.UUID:
    with session_scope() as session:
        job = Job(kind="photo_check", status=JobStatus.queued, input={"photo_ids": []})
        session.add(job)
        session.flush()
        return job.id


def test_a_soft_limit_in_the_runners_bookkeeping_still_ends_the_attempt(
    stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    def finish_cut_short(*args: object, **kwargs: object) -> None:
        raise SoftTimeLimitExceeded()  # the limit lands while the success is being written

    monkeypatch.setattr(runner, "_finish", finish_cut_short)
    job_id = _queued_job()
    runner.run_job(job_id, lambda ctx: PhotosChecked())
    job = _job_row(str(job_id))
    assert job.status is JobStatus.queued and job.attempts == 1  # retried, not stuck running
    assert (job.stage, job.error_code) == ("retrying", "internal_error")
