"""The Celery app: queues, reliability settings, and which modules each worker loads.

Below the runner and the outbox (they import it; it imports neither), so the job system has no
import circle: the soft time limit it needs is a setting (shared/config.py)."""

import importlib
import logging
import os

from celery import Celery, current_task
from celery.signals import worker_process_init
from kombu import Queue

from shared.config import get_settings
from shared.contracts import QUEUES
from shared.db import reset_engine
from shared.jobs.events import reset_clients

# The task modules a worker of each queue imports (heavy ML imports stay out of CPU workers).
QUEUE_MODULES: dict[str, list[str]] = {
    "photos": [
        "services.photos.checks",
        "services.photos.poses",
        "services.photos.erasure",
        "services.photos.retention",
    ],
    "train": ["services.trainer.tasks"],
    "generate": ["services.generator.tasks"],
    "notify": ["services.notifier.tasks"],
}
# Imported by a GPU worker's main process before it forks its pool: the ML libraries (torch,
# diffusers' pipelines, peft) are then whole in every pool process. Imported lazily inside a task
# instead, a soft time limit (or any signal) landing mid-import left a half-initialised module
# behind ("partially initialized module 'torch._dynamo'"), and every later job of that process
# failed. Importing torch does not initialise CUDA, so forking after it is safe -- as long as
# nothing asks the CUDA runtime how many GPUs there are (see preload).
PRELOAD_MODULES: dict[str, list[str]] = {
    "train": [
        "torch._dynamo",
        "peft",
        "diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion",
        "services.trainer.train",
    ],
    "generate": [
        "torch._dynamo",
        "peft",
        "diffusers.pipelines.controlnet",
        "diffusers.pipelines.stable_diffusion",
        "services.generator.pipeline",
    ],
}


def preload(queue: str) -> None:
    """Import `PRELOAD_MODULES[queue]` in the worker's main process, before Celery forks its pool.

    diffusers asks `torch.accelerator.is_available()` at import (`diffusers.utils.torch_utils`),
    and torch's CUDA check initialises the CUDA driver, which "poisons" fork: every pool process
    then fails its first CUDA call with "Cannot re-initialize CUDA in forked subprocess" (seen on
    an H200). `PYTORCH_NVML_BASED_CUDA_CHECK=1` makes torch count GPUs through NVML instead, which
    leaves fork safe (torch docs, "Poison fork in multiprocessing"). Must run before torch is
    imported by anything that checks availability; a caller's own setting wins."""
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    for module in PRELOAD_MODULES.get(queue, []):
        importlib.import_module(module)


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
        task_soft_time_limit=s.soft_time_limit(),
        broker_transport_options={
            # must exceed the longest task, or Redis re-delivers a task that is still running
            "visibility_timeout": s.celery_visibility_timeout,
            # a hung Redis ends a command after redis_socket_timeout instead of blocking a process
            **s.redis_options(),
        },
        # a restarted or unreachable Redis: workers reconnect by themselves, forever
        broker_connection_retry=True,
        broker_connection_max_retries=None,
        # the relay's publish: a few quick tries, then the outbox row waits for the next pass
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        # what a task prints (a library's stray line) is not a warning
        worker_redirect_stdouts_level="INFO",
        worker_send_task_events=False,
    )
    return app


celery_app = make_celery()
log = logging.getLogger(__name__)


def stop_consuming(queue: str, reason: str) -> bool:
    """From inside a task: this worker takes no more tasks of `queue` and shuts down warm.

    Celery's remote control, addressed to this worker only: `cancel_consumer` stops new
    deliveries at once, `shutdown` ends the worker after the running task; the supervisor
    (Kubernetes, `make run`) then starts a fresh process. For a process whose state can no
    longer be trusted (services/generator/loras.py). Returns False outside a Celery task.
    """
    hostname = current_task.request.hostname if current_task else None
    if not hostname:
        log.critical("cannot stop consuming %s outside a Celery task: %s", queue, reason)
        return False
    log.critical("worker %s stops taking %s tasks: %s", hostname, queue, reason)
    celery_app.control.cancel_consumer(queue, destination=[hostname])
    celery_app.control.shutdown(destination=[hostname])
    return True


@worker_process_init.connect  # type: ignore[untyped-decorator]
def _fresh_connections_after_fork(**_: object) -> None:
    """A forked pool process must not share the parent's DB/Redis sockets."""
    reset_engine()
    reset_clients()
