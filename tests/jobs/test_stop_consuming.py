"""A worker whose state can no longer be trusted stops taking tasks (shared.jobs.celery_app.stop_consuming),
checked on a real prefork Celery worker and Redis, as the generate worker runs."""

import subprocess
import sys
import time

import redis

from shared.config import get_settings
from tests.conftest import REPO, Processes, wait_until
from tests.jobs.stop_worker_app import QUEUE, record, stop_me


def test_a_worker_that_calls_stop_consuming_takes_no_more_tasks_and_exits(procs: Processes, tmp_path):
    log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "tests.jobs.stop_worker_app", "worker",
         "-Q", QUEUE, "-c", "1", "-P", "prefork", "-n", "stop-test@%h",
         "--without-gossip", "--without-mingle", "--loglevel", "INFO"],
        cwd=REPO, env=procs.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    procs.running.append(worker)
    broker = redis.Redis.from_url(get_settings().redis_url)
    marker = tmp_path / "ran"
    try:
        record.apply_async((str(tmp_path / "before"),), queue=QUEUE)
        wait_until(lambda: (tmp_path / "before").exists(), timeout=60, what="the worker to take a task")
        stop_me.apply_async(queue=QUEUE)
        time.sleep(0.5)
        record.apply_async((str(marker),), queue=QUEUE)
        worker.wait(timeout=60)  # warm shutdown after the stopping task
        assert not marker.exists()  # the task after it was not taken ...
        assert broker.llen(QUEUE) == 1  # ... it waits in the queue for a healthy worker
        assert b"stops taking stop-test tasks" in (tmp_path / "worker.log").read_bytes()
    finally:
        broker.delete(QUEUE)
