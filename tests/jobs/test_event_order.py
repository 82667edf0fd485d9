"""A job's event goes out only once the change it tells of is committed (real Postgres and Redis).

A page that hears "succeeded" reads the portraits and the mail job written in the same transaction;
published before the commit, it could read the rows as they were (seen in CI: no "portraits ready"
mail job yet for a job whose stream said succeeded)."""

import contextlib
import json
import time
import uuid

import redis
from sqlalchemy import select

from shared.config import get_settings
from shared.db import get_sessionmaker, session_scope
from shared.jobs import events
from shared.jobs.state import transition
from shared.models import Job, JobStatus


def _queued_job() -> uuid.UUID:
    with session_scope() as session:
        job = Job(kind="photo_check", status=JobStatus.queued, input={})
        session.add(job)
        session.flush()
        return job.id


def _next_message(pubsub: redis.client.PubSub, wait: float) -> dict | None:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.05)
        if message is not None:
            return json.loads(message["data"])
    return None


def _cancel_and_publish(session, job_id: uuid.UUID) -> None:  # noqa: ANN001
    job = transition(session, job_id, JobStatus.queued, JobStatus.canceled, stage="canceled")
    assert job is not None
    events.publish(job)


def _subscribed(job_id: uuid.UUID) -> redis.client.PubSub:
    pubsub = redis.Redis.from_url(get_settings().redis_url).pubsub()
    pubsub.subscribe(events.channel(job_id))
    pubsub.get_message(timeout=1)  # the subscription's own confirmation
    return pubsub


def test_an_event_waits_for_its_commit_and_the_row_is_there_when_it_arrives(stack) -> None:
    job_id = _queued_job()
    pubsub = _subscribed(job_id)
    with session_scope() as session:
        job = transition(session, job_id, JobStatus.queued, JobStatus.canceled, stage="canceled")
        assert job is not None
        events.publish(job)
        assert _next_message(pubsub, 0.5) is None  # not committed yet: nobody hears of it
    heard = _next_message(pubsub, 5)
    assert heard is not None and heard["status"] == "canceled"
    with session_scope() as session:  # what the event told is what a reader finds
        assert session.get(Job, job_id).status is JobStatus.canceled


def test_an_event_of_a_rolled_back_change_is_never_sent(stack) -> None:
    job_id = _queued_job()
    pubsub = _subscribed(job_id)
    with contextlib.suppress(RuntimeError), session_scope() as session:
        _cancel_and_publish(session, job_id)
        raise RuntimeError("the request failed after the change")
    assert _next_message(pubsub, 1) is None
    with session_scope() as session:  # the next commit of a session does not carry it either
        job = session.get(Job, job_id)
        assert job.status is JobStatus.queued
        job.stage = "waiting"
        session.flush()
        events.publish(job)
    heard = _next_message(pubsub, 5)
    assert heard is not None and heard["status"] == "queued" and heard["stage"] == "waiting"
    assert _next_message(pubsub, 0.5) is None


def test_an_event_of_a_session_closed_without_commit_is_never_sent(stack) -> None:
    job_id = _queued_job()
    pubsub = _subscribed(job_id)
    session = get_sessionmaker()()
    job = session.get(Job, job_id)
    events.publish(job)
    session.close()  # neither commit nor rollback: nothing was written
    session.execute(select(1))
    session.commit()  # the same session's next commit does not carry it
    assert _next_message(pubsub, 1) is None
    session.close()


def test_a_savepoint_released_inside_the_transaction_sends_nothing_yet(stack) -> None:
    """SQLAlchemy fires after_commit for a released savepoint too (enqueue makes one): an event
    published before it went out before the commit, and even when the transaction then rolled back."""
    job_id = _queued_job()
    pubsub = _subscribed(job_id)
    with contextlib.suppress(RuntimeError), session_scope() as session:
        _cancel_and_publish(session, job_id)
        with session.begin_nested():  # as enqueue() does for a follow-up job
            session.execute(select(1))
        assert _next_message(pubsub, 0.5) is None
        raise RuntimeError("the transaction fails after the savepoint")
    assert _next_message(pubsub, 1) is None
    with session_scope() as session:
        _cancel_and_publish(session, job_id)
        with session.begin_nested():
            session.execute(select(1))
    heard = _next_message(pubsub, 5)
    assert heard is not None and heard["status"] == "canceled"
    assert _next_message(pubsub, 0.5) is None  # once


def test_an_object_outside_a_transaction_is_published_at_once(stack) -> None:
    job_id = _queued_job()
    pubsub = _subscribed(job_id)
    with session_scope() as session:
        job = session.get(Job, job_id)
    events.publish(job)  # detached (the gateway publishes after its commit)
    heard = _next_message(pubsub, 5)
    assert heard is not None and heard["id"] == str(job_id)
