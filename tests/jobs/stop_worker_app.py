"""A Celery app for test_stop_consuming.py: the product's app with two test tasks."""

from pathlib import Path

from shared.jobs.celery_app import celery_app, stop_consuming

QUEUE = "stop-test"


@celery_app.task(name="tests.stop_me")
def stop_me() -> None:
    stop_consuming(QUEUE, "test: state no longer trusted")


@celery_app.task(name="tests.record")
def record(path: str) -> None:
    Path(path).write_text("ran")
