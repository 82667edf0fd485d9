"""The job system. See ARCHITECTURE.md, "The job contract". The kinds and their typed inputs and
results are in shared/contracts/; this package stores, queues, runs and retries them."""

from shared.contracts import KINDS, QUEUES, JobKind, get_kind
from shared.jobs.outbox import IdempotencyConflict, IdempotencyInProgress, enqueue
from shared.jobs.runner import JobCanceled, JobContext, JobError, job_task, run_job
from shared.jobs.state import InvalidTransition, transition

__all__ = [
    "KINDS",
    "QUEUES",
    "JobKind",
    "get_kind",
    "IdempotencyConflict",
    "IdempotencyInProgress",
    "enqueue",
    "JobCanceled",
    "JobContext",
    "JobError",
    "job_task",
    "run_job",
    "InvalidTransition",
    "transition",
]
