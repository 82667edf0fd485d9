"""The Celery app: queues, reliability settings, and which modules each worker loads."""

from celery import Celery
from celery.signals import worker_process_init
from kombu import Queue

from shared.config import get_settings
from shared.jobs.kinds import QUEUES
from shared.jobs.runner import soft_time_limit

# The task modules a worker of each queue imports (heavy ML imports stay out of CPU workers).
QUEUE_MODULES: dict[str, list[str]] = {
    "photos": ["services.trainer.photo_tasks"],
    "train": ["services.trainer.tasks"],
    "generate": ["services.generator.tasks"],
    "notify": ["services.notifier.tasks"],
}


def make_celery() -> Celery:
    s = get_settings()
    app = Celery("studio", broker=s.redis_url)
    app.conf.update(
        task_queues=[Queue(name) for name in QUEUES],
        task_default_queue="photos",
        task_acks_late=True,  # a task is acknowledged only after it ran ...
        task_reject_on_worker_lost=True,  # ... and goes back if its worker dies
        worker_prefetch_multiplier=1,  # a GPU worker holds one task at a time
        task_ignore_result=True,  # results live in the jobs table
        task_time_limit=s.task_time_limit,
        task_soft_time_limit=soft_time_limit(),
        broker_transport_options={
            # must exceed the longest task, or Redis re-delivers a task that is still running
            "visibility_timeout": s.celery_visibility_timeout,
        },
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    return app


celery_app = make_celery()


@worker_process_init.connect
def _fresh_connections_after_fork(**_: object) -> None:
    """A forked pool process must not share the parent's DB/Redis sockets."""
    from shared.db import reset_engine
    from shared.jobs.events import reset_clients

    reset_engine()
    reset_clients()
