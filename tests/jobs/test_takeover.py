"""`take_over`: a task delivered again takes a running job from a dead worker exactly once, and never
from a live one (real Postgres; the heartbeat interval is FAST_JOBS' 0.5 s, for the live owner the
product's 2 s)."""

import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest

from shared.config import get_settings
from shared.db import session_scope
from shared.jobs.runner import take_over
from shared.jobs.state import now
from shared.models import Job, JobStatus
from tests.jobs.test_failures import _job_row


def _running_job(heartbeat_age: float, attempts: int = 1) -> uuid.UUID:
    with session_scope() as session:
        job = Job(
            kind="photo_check",
            status=JobStatus.running,
            input={},
            worker="dead-host:1:abc",
            attempts=attempts,
            heartbeat_at=now() - timedelta(seconds=heartbeat_age),
        )
        session.add(job)
        session.flush()
        return job.id


def test_two_copies_race_for_a_dead_workers_job_and_one_wins(stack) -> None:
    # Older than the takeover window (2 beats = 1 s) and younger than JOB_STALE_SECONDS (10 s): a
    # scheduler left running by another test would otherwise reap (re-queue) the job first.
    job_id = _running_job(heartbeat_age=3)
    with ThreadPoolExecutor(4) as pool:
        won = list(pool.map(lambda n: take_over(job_id, f"copy-{n}"), range(4)))
    winners = [j for j in won if j is not None]
    assert len(winners) == 1
    job = _job_row(str(job_id))
    assert job.status is JobStatus.running and job.worker == winners[0].worker and job.attempts == 2


@pytest.fixture
def product_heartbeat(stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[float]:  # noqa: ANN001
    """The product's heartbeat (2 s, a 4 s take-over window) instead of the suite's 0.5 s: a live
    owner's beat committing more than 0.5 s late (a loaded machine: 1 of 40 runs here) lost the job."""
    monkeypatch.setenv("JOB_HEARTBEAT_SECONDS", "2")
    get_settings.cache_clear()
    yield get_settings().job_heartbeat_seconds
    get_settings.cache_clear()  # the suite's settings again once monkeypatch restores the variable


def test_a_live_owner_keeps_its_job(product_heartbeat: float) -> None:
    job_id = _running_job(heartbeat_age=0)
    stop = threading.Event()

    def beat() -> None:  # the owner heartbeats every interval, as the runner does
        while not stop.wait(product_heartbeat):
            with session_scope() as session:
                session.get(Job, job_id).heartbeat_at = now()

    owner = threading.Thread(target=beat)
    owner.start()
    try:
        assert take_over(job_id, "copy") is None  # waited 2 beats, saw the heartbeat move
    finally:
        stop.set()
        owner.join()
    job = _job_row(str(job_id))
    assert job.worker == "dead-host:1:abc" and job.attempts == 1


def test_past_its_last_attempt_the_job_fails_as_worker_lost(stack) -> None:
    job_id = _running_job(heartbeat_age=30, attempts=3)
    assert take_over(job_id, "copy") is None
    job = _job_row(str(job_id))
    assert job.status is JobStatus.failed and job.error_code == "worker_lost"
