"""Runs a job handler inside a Celery task: claim, heartbeat, progress, finish, retry or fail."""

import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import tenacity
from celery.exceptions import SoftTimeLimitExceeded
from pydantic import ValidationError
from sqlalchemy import func, update

from shared import i18n
from shared.config import get_settings
from shared.contracts import ErrorCode, JobInput, JobResult, get_kind
from shared.contracts.base import InputT
from shared.contracts.errors import sentence
from shared.db import session_scope
from shared.i18n import Sentence
from shared.jobs import events
from shared.jobs.celery_app import celery_app
from shared.jobs.outage import database_down, outage_of
from shared.jobs.outbox import enqueue, mail_failure
from shared.jobs.reaper import hand_back
from shared.jobs.retry import retry_or_fail
from shared.jobs.state import now as utcnow
from shared.jobs.state import transition
from shared.models import Job, JobStatus

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])


class JobError(Exception):
    """A failure a person can act on: fails the job with this code and message, no retry.

    `message` is English text, or catalogue sentences (shared/i18n.py): then the job stores their
    English text as `error_message` and the sentences under `result.error_sentences`, so the gateway
    can show the message in the reader's language.
    """

    def __init__(
        self,
        code: str,
        message: str | Sequence[Sentence],
        *,
        retryable: bool = False,
        outage: str | None = None,
    ):
        """`retryable`: another attempt may succeed. `outage` (implies retryable): the dependency
        that failed the attempt (a shared.jobs.retry.DEPENDENCY_NAMES key, e.g. "mail"): the
        attempt is given back while that outage lasts less than its window (shared/jobs/retry.py)."""
        self.sentences = [] if isinstance(message, str) else list(message)
        self.message = message if isinstance(message, str) else i18n.join(self.sentences)
        super().__init__(self.message)
        self.code = code
        self.retryable = retryable or outage is not None
        self.outage = outage

    @classmethod
    def of(cls, code: ErrorCode, *, retryable: bool = False, **values: Any) -> "JobError":
        """The error `code` with its catalogue sentence (`job.<code>`, shared/i18n.py) and values."""
        return cls(code, [sentence(code, **values)], retryable=retryable)

    @classmethod
    def invalid_input(cls, error: ValidationError) -> "JobError":
        """A job input its contract refuses: the first error's own code when the catalogue knows
        it (a contract's PydanticCustomError, e.g. `bad_count`), else `bad_input`."""
        first = error.errors(include_url=False)[0]
        if first["type"] in ErrorCode.__members__:
            return cls.of(ErrorCode(first["type"]), **first.get("ctx", {}))
        detail = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'input'}: {e['msg']}"
            for e in error.errors(include_url=False)
        )
        return cls.of(ErrorCode.bad_input, detail=detail[:300])

    def result(self) -> dict[str, Any]:
        """What the failed job keeps as `result` when the error has sentences."""
        return {"error_sentences": [s.to_json() for s in self.sentences]}


class JobCanceled(Exception):
    """The job was canceled (or handed to another worker) while this attempt ran."""


@dataclass
class JobContext(Generic[InputT]):
    """What a handler knows of its job: ids, the typed input (its kind's contract), the attempt."""

    job_id: uuid.UUID
    user_id: uuid.UUID | None
    kind: str
    input: InputT
    attempt: int
    max_attempts: int
    worker: str
    _lost: threading.Event = field(default_factory=threading.Event)
    _follow_ups: list[tuple[JobInput, uuid.UUID | None]] = field(default_factory=list)
    _last_write: float = 0.0
    _last_stage: str | None = None
    _soft_deadline: float = float("inf")  # time.monotonic() past which the attempt must stop

    @property
    def owner(self) -> uuid.UUID:
        """The user the job belongs to; raises JobError(bad_input) for a job without one (every
        kind but `retention_sweep` and the goodbye mail has one)."""
        if self.user_id is None:
            raise JobError.of(ErrorCode.bad_input, detail=f"a {self.kind} job needs its user")
        return self.user_id

    @property
    def is_last_attempt(self) -> bool:
        """No retry follows if this attempt fails (the runner fails the job then)."""
        return self.attempt >= self.max_attempts

    def progress(self, fraction: float, stage: str | None = None, **detail: Any) -> None:
        """Record progress (0..1) and a stage label, publish an event; raise if canceled.

        A new stage is always written. Repeats of a stage (a hot loop reporting each training
        step, whose label differs only in its numbers) are written at most every 0.2 s."""
        self.check_canceled()
        fraction = max(0.0, min(1.0, fraction))
        t, key = time.monotonic(), _stage_key(stage)
        if t - self._last_write < 0.2 and key == self._last_stage and fraction < 1.0 and not detail:
            return
        self._last_write, self._last_stage = t, key
        job = self._beat(progress=fraction, stage=stage)
        if job is None:
            raise JobCanceled()
        events.publish(job, **detail)

    def check_canceled(self) -> None:
        """Raise JobCanceled once the job was canceled or handed on, and Celery's
        SoftTimeLimitExceeded once the attempt ran past the soft time limit (Celery signals it too,
        but a signal that lands in library code, e.g. an import's `except Exception`, is lost)."""
        if self._lost.is_set():
            raise JobCanceled()
        if time.monotonic() > self._soft_deadline:
            limit = get_settings().soft_time_limit()
            raise SoftTimeLimitExceeded(f"soft time limit ({limit} s) exceeded")

    def _beat(self, **values: Any) -> Job | None:
        """Stamp the heartbeat (and `values`) while this worker still runs the job.

        Returns the updated job, or None (and marks the attempt lost) once it was canceled or handed on.
        """
        with session_scope() as session:
            job = session.execute(
                update(Job)
                .where(
                    Job.id == self.job_id,
                    Job.status == JobStatus.running,
                    Job.worker == self.worker,
                )
                .values(heartbeat_at=func.now(), **values)  # the database's clock, as the reaper's
                .returning(Job)
            ).scalar_one_or_none()
        if job is None:
            self._lost.set()
        return job

    def follow_up(self, job_input: JobInput, *, user_id: uuid.UUID | None) -> None:
        """Enqueue another job in the same transaction that marks this one succeeded."""
        self._follow_ups.append((job_input, user_id))


ResultT = TypeVar("ResultT", bound=JobResult)
Handler = Callable[[JobContext[Any]], JobResult]


def _stage_key(stage: str | None) -> str | None:
    """A stage label without its numbers: "training step 12/400, about 3 min left" is one stage."""
    return re.sub(r"\d+", "#", stage) if stage else stage


def _log_wait(state: tenacity.RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome else None
    log.warning(
        "the database is not answering (%s); recording the job's state again in %.1f s",
        type(error).__name__,
        state.next_action.sleep if state.next_action else 0.0,
    )


def outlasting_database_outages(fn: F) -> F:
    """Retry `fn` (the runner's own bookkeeping: claim, finish, retry) while Postgres does not answer,
    for up to JOB_OUTAGE_WINDOW_SECONDS, waiting 0.5-5 s between tries (tenacity's full-jitter
    exponential wait). Without it, a 20 s pause left a claimed job `running` (the reaper then called
    its worker lost: an attempt and a stale window lost), or lost a delivered task before its claim.
    Each try is its own transaction: the compare-and-set inside makes a repeat harmless."""
    return tenacity.retry(  # type: ignore[return-value]  # tenacity's wrapper keeps fn's signature
        retry=tenacity.retry_if_exception(database_down),
        wait=tenacity.wait_random_exponential(multiplier=0.5, max=5),
        stop=tenacity.stop_after_delay(get_settings().job_outage_window_seconds),
        before_sleep=_log_wait,
        reraise=True,
    )(fn)


def worker_name() -> str:
    """host:pid:random, unique per attempt's process (`Job.worker`)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _heartbeat(ctx: JobContext[Any], stop: threading.Event) -> None:
    interval = get_settings().job_heartbeat_seconds
    while not stop.wait(interval):
        try:
            if ctx._beat() is None:
                return
        except Exception:
            log.exception("heartbeat failed for job %s", ctx.job_id)


@outlasting_database_outages
def claim(job_id: uuid.UUID, worker: str, from_: JobStatus = JobStatus.queued) -> Job | None:
    """Start a new attempt of a job in `from_` (`running` only when `worker` already holds it)."""
    with session_scope() as session:
        job = transition(
            session,
            job_id,
            from_,
            JobStatus.running,
            claimed_by=worker if from_ is JobStatus.running else None,
            worker=worker,
            attempts=Job.attempts + 1,
            started_at=utcnow(),
            heartbeat_at=func.now(),
            stage="starting",
            error_code=None,
            error_message=None,
        )
        if job is not None:
            events.publish(job)
        return job


# A running job whose heartbeat is this many intervals old lost its worker (see `take_over`).
TAKEOVER_BEATS = 2


@outlasting_database_outages
def take_over(job_id: uuid.UUID, worker: str) -> Job | None:
    """Claim a `running` job whose worker died, for a task delivered again; None if it lives.

    Celery (acks_late + task_reject_on_worker_lost) re-queues a task at once when the pool process
    running it is killed (SIGKILL, out of memory), so the copy arrives while the job still reads
    `running`. Its heartbeat decides: if it does not move for TAKEOVER_BEATS intervals (waited here,
    so at most that long after the kill), the owner is gone and this worker takes the job, a new
    attempt. The UPDATE is a compare-and-set on the owner and the heartbeat it was seen with, so of
    two copies (or a copy and the reaper) one wins; a live owner's next heartbeat moves it, and a
    live owner that lost anyway stops at its next heartbeat (`JobCanceled`). Past its last attempt
    the job fails with `worker_lost`, as the reaper would fail it.
    """
    with session_scope() as session:
        seen = session.get(Job, job_id)
        if seen is None or seen.status is not JobStatus.running:
            return None
        owner, beat = seen.worker, seen.heartbeat_at
    window = TAKEOVER_BEATS * get_settings().job_heartbeat_seconds
    if beat is not None:
        time.sleep(max(0.0, (beat - utcnow()).total_seconds() + window))
    with session_scope() as session:
        unchanged = Job.heartbeat_at.is_(None) if beat is None else Job.heartbeat_at == beat
        job = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.running, Job.worker == owner, unchanged)
            .values(worker=worker, heartbeat_at=func.now())
            .returning(Job)
            .execution_options(synchronize_session=False)
        ).scalar_one_or_none()
        if job is None:
            return None
        log.warning("job %s lost its worker %s; taken over by %s", job_id, owner, worker)
        if job.attempts >= job.max_attempts:
            failed = hand_back(session, job, claimed_by=worker)
            if failed is not None:
                events.publish(failed)
            return None
    return claim(job_id, worker, JobStatus.running)


def run_job(job_id: uuid.UUID, handler: Handler) -> None:
    """One attempt of a job (the body of its Celery task): claim it, parse its input by its kind's
    contract, run `handler`, record the end. An input the contract refuses fails the job at once."""
    worker = worker_name()
    job = claim(job_id, worker) or take_over(job_id, worker)
    if job is None:
        log.info("job %s is not queued and its worker lives (or it ended): nothing to do", job_id)
        return
    kind = get_kind(job.kind)
    invalid: JobError | None = None
    try:
        job_input = kind.parse(job.input)
    except ValidationError as e:
        job_input, invalid = kind.input.model_construct(), JobError.invalid_input(e)
    ctx = JobContext(job.id, job.user_id, job.kind, job_input, job.attempts, job.max_attempts, worker)
    ctx._soft_deadline = time.monotonic() + get_settings().soft_time_limit()
    log.info(
        "job started",
        extra={
            "job_id": str(job.id),
            "user_id": str(job.user_id),
            "kind": job.kind,
            "attempt": job.attempts,
        },
    )
    try:
        if invalid is None:
            _attempt(ctx, handler)
        else:  # a retry would read the same input: fail now, in words
            _finish(ctx, JobStatus.failed, error_code=invalid.code, error_message=invalid.message,
                    result=invalid.result())  # fmt: skip
    except SoftTimeLimitExceeded as e:
        # Celery's soft limit (it fires once) landed in this runner's own bookkeeping, after the
        # handler: recording the end was cut short. Record it now, or the job stays `running`
        # until the reaper calls its worker lost.
        log.warning("job %s: the soft time limit cut its bookkeeping short", job_id)
        _retry_or_fail(ctx, "internal_error", public_error(e))


def public_error(e: BaseException) -> str:
    """What a job shows of an unexpected exception (`result.last_error`): its class name only, a code
    such as `EndpointConnectionError` or `SoftTimeLimitExceeded`. The message is for the worker's log:
    botocore's and psycopg's name the S3 endpoint, the bucket, object keys with a user's id, hosts.

    A soft time limit that fired inside a library which wraps what it catches (transformers' and
    diffusers' lazy imports raise ImportError "from" it) is named as the time limit: the operator
    needs the cause, not the wrapper."""
    seen: set[int] = set()
    cause: BaseException | None = e
    while cause is not None and id(cause) not in seen:  # the whole chain, a cycle ends it
        if isinstance(cause, SoftTimeLimitExceeded):
            return type(cause).__name__
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return type(e).__name__


def _attempt(ctx: JobContext[Any], handler: Handler) -> None:
    """Run `handler` once and record how it ended (succeeded, failed, retry, canceled)."""
    job_id = ctx.job_id
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(ctx, stop), daemon=True)
    beat.start()
    started = time.monotonic()
    try:
        result = handler(ctx).to_row()
    except JobCanceled:
        log.info("job %s canceled during attempt %d", job_id, ctx.attempt)
        return
    except JobError as e:
        if e.retryable:
            _retry_or_fail(ctx, e.code, e.message, outage=e.outage)
        else:
            kept = {"result": e.result()} if e.sentences else {}  # else the result stays as it was
            _finish(ctx, JobStatus.failed, error_code=e.code, error_message=e.message, **kept)
        return
    except Exception as e:  # a bug or an outage: retry, then fail with a clear reason
        log.exception("job %s attempt %d crashed", job_id, ctx.attempt)  # the details: only here
        _retry_or_fail(ctx, "internal_error", public_error(e), outage=outage_of(e))
        return
    finally:
        stop.set()
        _observe(ctx.kind, time.monotonic() - started)
    _finish(ctx, JobStatus.succeeded, result=result, progress=1.0, stage="done")


@outlasting_database_outages
def _finish(ctx: JobContext[Any], status: JobStatus, **values: Any) -> None:
    with session_scope() as session:
        job = transition(session, ctx.job_id, JobStatus.running, status, claimed_by=ctx.worker, **values)
        if job is None:
            if session.get(Job, ctx.job_id) is None:  # an erasure deletes its own job's row too
                log.info("job %s ended after its row was deleted with its account", ctx.job_id)
            else:
                log.info("job %s was canceled or reassigned before it finished", ctx.job_id)
            return
        if status is JobStatus.succeeded:
            for follow, user_id in ctx._follow_ups:
                enqueue(session, follow, user_id=user_id)
        else:
            mail_failure(session, job)
        events.publish(job)
    _count(ctx.kind, status)


@outlasting_database_outages
def _retry_or_fail(ctx: JobContext[Any], code: str, detail: str, outage: str | None = None) -> None:
    with session_scope() as session:
        job = session.get(Job, ctx.job_id)
        if job is None:
            return
        moved = retry_or_fail(
            session,
            job,
            claimed_by=ctx.worker,
            code=code,
            retry_message=f"Attempt {job.attempts} failed; retrying.",
            final_message=i18n.say(f"job.{ErrorCode.internal_error}", attempts=job.attempts),
            result={"last_error": detail},
            outage=outage,
        )
        if moved is not None:
            events.publish(moved)
    if moved is not None and moved.status is JobStatus.failed:
        _count(ctx.kind, JobStatus.failed)


def _observe(kind: str, seconds: float) -> None:
    from shared.metrics import JOB_SECONDS

    JOB_SECONDS.labels(kind=kind).observe(seconds)


def _count(kind: str, status: JobStatus) -> None:
    from shared.metrics import JOBS_FINISHED

    JOBS_FINISHED.labels(kind=kind, status=str(status)).inc()


def job_task(
    input_type: type[InputT],
) -> Callable[[Callable[[JobContext[InputT]], ResultT]], Callable[[JobContext[InputT]], ResultT]]:
    """Register a handler as the Celery task of the job kind whose input is `input_type`
    (shared/contracts/): `@job_task(GeneratePortraits)` over `def h(ctx: JobContext[GeneratePortraits])
    -> PortraitsMade`. The handler is returned unchanged (tests call it through `run_job`)."""
    kind = get_kind(input_type.kind)
    if kind.input is not input_type:
        raise TypeError(f"{input_type.__name__} is not the input of the job kind {kind.name!r}")

    def register(handler: Callable[[JobContext[InputT]], ResultT]) -> Callable[[JobContext[InputT]], ResultT]:
        @celery_app.task(name=kind.task_name)  # type: ignore[untyped-decorator]
        def task(job_id: str) -> None:
            run_job(uuid.UUID(job_id), handler)

        handler.task = task  # type: ignore[attr-defined]
        return handler

    return register
