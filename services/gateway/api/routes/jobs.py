"""Jobs: read, list, cancel, and follow live as server-sent events."""

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select
from sse_starlette.sse import EventSourceResponse

from services.gateway.api import reads
from services.gateway.api.deps import CurrentUser, SessionDep, StreamUser, conflict, owned
from services.gateway.api.reads import Claims
from services.gateway.api.schemas import JobList, JobOut, in_language
from services.gateway.event_hub import hub
from services.gateway.outages import DEPENDENCY_ERRORS, outage_of
from shared.contracts import JobKindName
from shared.db import get_sessionmaker
from shared.i18n import current_locale
from shared.jobs import events
from shared.jobs.state import transition
from shared.models import Job, JobStatus

router = APIRouter(prefix="/jobs", tags=["jobs"])
POLL_SECONDS = 2.0  # how often the stream re-reads the row while Redis is down
RESUME_MS = 5000  # SSE `retry:` after an `unavailable` event: when EventSource tries again


@router.get("", response_model=JobList)
def list_jobs(
    user: CurrentUser,
    session: SessionDep,
    kind: JobKindName | None = None,
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> JobList:
    """The user's jobs, newest first: `kind` one of shared.contracts.KINDS, `limit` 1..200."""
    query = select(Job).where(Job.user_id == user.id).order_by(Job.created_at.desc())
    if kind:
        query = query.where(Job.kind == kind)
    if status:
        query = query.where(Job.status == status)
    return JobList(jobs=[JobOut.of(j) for j in session.scalars(query.limit(limit))])


@router.get("/{job_id}", response_model=JobOut)
async def read_job(job_id: uuid.UUID, claims: Claims) -> Response:
    """The job, for status polling.
    \f
    One database round trip (services/gateway/api/reads.py)."""
    return await reads.read_job(claims, job_id)


@router.post("/{job_id}/cancel", response_model=JobOut)
def cancel_job(job_id: uuid.UUID, user: CurrentUser, session: SessionDep) -> JobOut:
    job = owned(session, Job, job_id, user, "Job")
    canceled = transition(
        session, job.id, {JobStatus.queued, JobStatus.running}, JobStatus.canceled, stage="canceled"
    )
    session.commit()  # with what the job left transient, settled (shared/jobs/ended.py)
    if canceled is None:  # it had ended already, or finished meanwhile
        session.refresh(job)
        raise conflict("job.already_ended", status=job.status)
    events.publish(canceled)
    return JobOut.of(canceled)


@router.get(
    "/{job_id}/events",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def job_events(
    job_id: uuid.UUID, request: Request, user: StreamUser, session: SessionDep
) -> EventSourceResponse:
    """Server-sent events: `event: job` with the job JSON on every change, until it ends; while the
    database is down, one `event: unavailable` (`{"detail", "dependency"}`) ends the stream.

    Browsers' EventSource may pass the access token as `?access_token=` (on this route only), and
    the language of `error_message` as `?lang=` (it sends the browser's Accept-Language otherwise).
    """
    await run_in_threadpool(owned, session, Job, job_id, user, "Job")  # keep the event loop free
    # The stream may stay open for minutes: give the pooled connection back now (the request's
    # session is only closed when the response ends; 15 open streams used to exhaust the pool).
    session.close()
    return EventSourceResponse(_stream(job_id, request, current_locale.get()), ping=15)


def _read(job_id: uuid.UUID) -> dict | None:
    with get_sessionmaker()() as session:
        job = session.get(Job, job_id)
        return events.job_snapshot(job) if job else None


async def _stream(job_id: uuid.UUID, request: Request, locale: str) -> AsyncIterator[dict]:
    """The job as it changes. Redis down: the row is polled instead. Postgres down: one `unavailable`
    event with the sentence (and `retry:` for EventSource), then the stream ends; the client resumes."""
    try:
        async with contextlib.AsyncExitStack() as stack:
            try:  # subscribe first, then read: no gap
                queue = await stack.enter_async_context(hub().subscribe(events.channel(job_id)))
            except DEPENDENCY_ERRORS:
                queue = None  # live events are a shortcut: poll the row instead
            snapshot = await asyncio.to_thread(_read, job_id)
            while snapshot is not None:
                yield {"event": "job", "data": json.dumps(in_language(snapshot, locale))}
                if JobStatus(snapshot["status"]).terminal or await request.is_disconnected():
                    return
                message = None
                if queue is not None:
                    with contextlib.suppress(TimeoutError):
                        message = await asyncio.wait_for(queue.get(), timeout=5.0)
                else:
                    await asyncio.sleep(POLL_SECONDS)
                # On silence, re-read the row: the database is the truth, events are a shortcut.
                snapshot = json.loads(message) if message else await asyncio.to_thread(_read, job_id)
    except DEPENDENCY_ERRORS as e:
        dependency, sentence = outage_of(e) or ("database", "")
        data = {"detail": sentence, "dependency": dependency}
        yield {"event": "unavailable", "data": json.dumps(data), "retry": RESUME_MS}
