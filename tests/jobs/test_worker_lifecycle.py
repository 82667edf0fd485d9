"""Workers, relay and scheduler as Kubernetes runs them: probes and metrics on HEALTH_PORT, SIGTERM
(a pod stopping) lets the running task finish, and the soft time limit leads to a retry."""

import os
import signal
import uuid
from pathlib import Path

import httpx
import pytest

from shared.db import session_scope
from shared.localstack import free_port, wait_for_port
from shared.models import Job
from tests.conftest import Api, Platform, Processes, wait_until
from tests.pictures import astronaut_variants, jpeg
from tests.trainer.test_service import TRAIN_WORKER_ENV, start, upload_accepted


def _job(job_id: str) -> Job:
    with session_scope() as session:
        job = session.get(Job, uuid.UUID(job_id))
        session.expunge(job)
        return job


def test_workers_relay_and_scheduler_answer_probes_and_metrics(procs: Processes) -> None:
    ports = {}
    for name, args in {
        "worker": ("worker", "notify"),
        "relay": ("relay",),
        "scheduler": ("scheduler",),
    }.items():
        ports[name] = free_port()
        procs.start(f"probed-{name}", *args, env={"HEALTH_PORT": str(ports[name])})
    for name, port in ports.items():
        wait_for_port(port, timeout=60)
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/healthz", timeout=10).text == "ok", name
        ready = httpx.get(f"{base}/readyz", timeout=10)
        assert (ready.status_code, ready.text) == (200, "ready"), name
        metrics = httpx.get(f"{base}/metrics", timeout=10)
        assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
        assert "# TYPE" in metrics.text or name == "worker", name  # a fresh worker has no samples yet
    scheduler = f"http://127.0.0.1:{ports['scheduler']}/metrics"
    wait_until(lambda: 'studio_queue_depth{queue="photos"}' in httpx.get(scheduler, timeout=10).text,
               timeout=30, what="queue depths sampled")  # fmt: skip


def test_sigterm_lets_the_running_task_finish(api: Api, platform: Platform) -> None:
    user = api.new_user()
    files = [("files", (f"me{i}.jpg", jpeg(im), "image/jpeg")) for i, im in enumerate(astronaut_variants(16))]
    job_id = api.post("/v1/photos", files=files, headers=user.auth).json()["job"]["id"]
    job = wait_until(
        lambda: (j := _job(job_id)).status == "running" and j.progress < 0.5 and j,
        timeout=60,
        interval=0.05,
        what="the check under way",
    )
    pool_pid = int(job.worker.split(":")[1])  # host:pid:nonce of the pool process that claimed it
    worker = next(p for p in platform.procs.running if p.poll() is None and p.pid == os.getpgid(pool_pid))
    os.kill(worker.pid, signal.SIGTERM)  # what the kubelet sends the container's main process
    try:
        done = api.wait_job(job_id, user, timeout=90)
        assert done["status"] == "succeeded" and done["attempts"] == 1, done  # not cut, not retried
        assert done["result"] == {"accepted": 16, "rejected": 0}
        assert worker.wait(timeout=30) == 0  # then the worker leaves, cleanly
    finally:
        platform.procs.running.remove(worker)
        platform.procs.kill(worker)
        platform.procs.worker("photos")  # the platform's photos worker, fresh


@pytest.mark.slow  # ~100 s: a train worker start, two or three short attempts
def test_the_soft_time_limit_leads_to_a_retry(api: Api, procs: Processes) -> None:
    """TASK_TIME_LIMIT 62: the soft limit (60 s earlier) stops an attempt after 2 s. The attempt is
    recorded as cut by the time limit (`result.last_error`, also when the limit landed inside a
    library's lazy import, which wraps it in an ImportError) and retried, from the last checkpoint.
    Whether a later attempt ends within 2 s depends on the machine (a warm worker trains the rest of
    a tiny likeness in about 1.5 s): the job succeeds then, else it fails after its 3 attempts and
    its likeness fails with it."""
    worker = procs.worker("train", TASK_TIME_LIMIT="62", **TRAIN_WORKER_ENV)
    user = api.new_user()
    upload_accepted(api, user, 8)
    body = start(api, user).json()
    job = api.wait_job(body["job"]["id"], user, timeout=240)
    likeness = api.get(f"/v1/likenesses/{body['likeness']['id']}", headers=user.auth).json()
    log = Path(worker.log_path).read_text(errors="replace")  # type: ignore[attr-defined]
    cut = log.count("Soft time limit (2s) exceeded")  # Celery's warning, one per attempt it cut
    if job["status"] == "failed":
        assert job["attempts"] == job["max_attempts"] == 3 == cut, (job, cut)
        assert job["error_code"] == "internal_error", job
        assert job["result"]["last_error"] == "SoftTimeLimitExceeded", job["result"]  # not a wrapper's name
        assert likeness["status"] == "failed"
    else:  # a later attempt resumed from the last checkpoint and ended within the limit
        assert job["status"] == "succeeded" and likeness["status"] == "ready", (job, likeness)
        assert job["attempts"] == cut + 1 >= 2, (job, cut)
