"""What every job kind declares: its typed input, its typed result, its Celery task and queue.

A job row keeps its input and result as JSON; these models are how the services read and write
them. They parse rows already in flight: fields added later have defaults, and keys this version
does not know are ignored (`extra="ignore"`), so a rolling deploy never strands a queued job.
No SQLAlchemy, Celery or torch here (.importlinter): the gateway, the workers and tests import it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict

Queue = Literal["photos", "train", "generate", "notify"]
QUEUES: tuple[Queue, ...] = ("photos", "train", "generate", "notify")


class JobInput(BaseModel):
    """A job's input, as stored in `Job.input` (JSON). Subclasses name their kind in `kind`."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    kind: ClassVar[str]

    def to_row(self) -> dict[str, Any]:
        """The JSON stored in `Job.input`: unset optional fields are left out, as the hand-built
        dicts did (the Idempotency-Key fingerprint of a retried request stays the same)."""
        return self.model_dump(mode="json", exclude_none=True)


class JobResult(BaseModel):
    """A job's result, as stored in `Job.result` (JSON) when it succeeds."""

    model_config = ConfigDict(extra="ignore")

    def to_row(self) -> dict[str, Any]:
        """The JSON stored in `Job.result`: the fields the handler set (others left out)."""
        return self.model_dump(mode="json", exclude_unset=True)


InputT = TypeVar("InputT", bound=JobInput)
ResultT = TypeVar("ResultT", bound=JobResult)


@dataclass(frozen=True)
class JobKind(Generic[InputT, ResultT]):
    """One kind of job: its name (`Job.kind`), Celery task, queue, input and result types.

    `max_attempts` None means the JOB_MAX_ATTEMPTS setting. `mail_on_failure`: the user is told in
    words by mail when the job finally fails. `promises`: the objects and mails a succeeded job
    leaves behind (documentation, checked against ARCHITECTURE.md's table by a test). A failed attempt
    is retried after `retry_base_seconds` x 2^(attempt-1), at most `retry_max_seconds`, jittered
    (shared/jobs/retry.py `backoff`; ARCHITECTURE.md, "The job contract")."""

    name: str
    task_name: str
    queue: Queue
    input: type[InputT]
    result: type[ResultT]
    max_attempts: int | None = None
    mail_on_failure: bool = False
    promises: tuple[str, ...] = field(default=())
    retry_base_seconds: float = 2.0
    retry_max_seconds: float = 60.0

    def parse(self, raw: Any) -> InputT:
        """`Job.input` as this kind's input model; raises pydantic.ValidationError."""
        return self.input.model_validate(raw or {})
