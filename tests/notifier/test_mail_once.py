"""A mail is sent once even when Postgres goes away around the SMTP conversation
(services/notifier/delivery.py), on the real stack and a real aiosmtpd server, run in this process.

Before: the delivery row was inserted, the mail sent and the row marked `sent` in one transaction
held open through all SMTP retries; a Postgres restart after the server's 250 rolled the row back,
the attempt was given back as an outage, and the retry found no row and sent the mail again."""

import os
import signal
import threading
import time
import uuid

import psutil
from sqlalchemy import select, update

from services.notifier.compose import message_id_for
from services.notifier.tasks import send_email
from shared import storage
from shared.db import session_scope
from shared.jobs import run_job
from shared.localstack import LocalStack
from shared.models import EmailDelivery, Job, JobStatus
from tests.conftest import wait_until
from tests.notifier.test_notify_jobs import make_job, make_portraits, make_user, smtp  # noqa: F401 - the fixture

OUTAGE_SECONDS = 3.0


def _delivery(event_key: str) -> EmailDelivery:
    with session_scope() as session:
        return session.scalars(select(EmailDelivery).where(EmailDelivery.event_key == event_key)).one()


def test_a_postgres_restart_after_the_smtp_250_does_not_send_the_mail_twice(stack: LocalStack, smtp) -> None:  # noqa: F811
    """Postgres crashes the moment the SMTP server accepts the mail and is back 3 s later: the
    attempt records `sent` once it answers (no second attempt, no second mail)."""
    handler = smtp.handler
    accepted = handler.handle_DATA
    restart: list[threading.Thread] = []

    def back_after_a_while() -> None:
        time.sleep(OUTAGE_SECONDS)
        stack._pg.ensure_postgres_running()  # type: ignore[union-attr]

    async def accept_then_crash_postgres(server, session, envelope):  # noqa: ANN001
        reply = await accepted(server, session, envelope)
        if not restart:  # immediate shutdown, as a crash or failover: every connection is cut
            pid = stack._pg.get_pid()  # type: ignore[union-attr]
            os.kill(pid, signal.SIGQUIT)
            wait_until(lambda: not psutil.pid_exists(pid), timeout=20, what="the postmaster to exit")
            restart.append(threading.Thread(target=back_after_a_while))
            restart[0].start()
        return reply

    handler.handle_DATA = accept_then_crash_postgres  # type: ignore[method-assign]
    ana = make_user()
    job_id = make_job(ana.id, "send_email", {"template": "signup_existing", "event_key": "once"})
    try:
        run_job(job_id, send_email)
        for _ in range(3):  # a given-back attempt's retry (the relay would publish it once due)
            with session_scope() as session:
                if session.get(Job, job_id).status is not JobStatus.queued:
                    break
            run_job(job_id, send_email)
    finally:
        for thread in restart:
            thread.join()
    assert len(restart) == 1, "the SMTP server never accepted the mail"
    sent = [m.parse()["Message-ID"] for m in handler.messages]
    assert len(sent) == 1, f"one event, {len(sent)} mails delivered to {ana.email}: {sent}"
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert (job.status, job.attempts) == (JobStatus.succeeded, 1), (job.status, job.error_message)
        assert job.result["message_id"] == sent[0]
    delivery = _delivery("once")
    assert (delivery.status, delivery.message_id) == ("sent", sent[0])


def _left_sending(event_key: str, sender_job: uuid.UUID, worker: str) -> None:
    """The row an attempt leaves when its process dies between the SMTP 250 and the record."""
    with session_scope() as session:
        session.add(
            EmailDelivery(
                event_key=event_key,
                template="signup_existing",
                status="sending",
                sender_job_id=sender_job,
                sender_worker=worker,
            )
        )


def test_a_mail_whose_sender_died_before_recording_it_is_sent_again_with_the_same_message_id(smtp) -> None:  # noqa: F811
    """The one at-least-once window: the outcome is unknown, so the mail goes again (it may be the
    only copy), with the Message-ID the first one had, for the receiving side to drop a duplicate."""
    ana = make_user()
    job_id = make_job(ana.id, "send_email", {"template": "signup_existing", "event_key": "orphan"})
    _left_sending("orphan", job_id, "gone-host:1:dead")  # its earlier attempt, now over
    run_job(job_id, send_email)
    [received] = smtp.handler.messages
    assert received.parse()["Message-ID"] == message_id_for("orphan", "studio.test")
    assert _delivery("orphan").status == "sent"


def test_a_run_waits_while_another_live_attempt_is_sending_the_same_event(smtp) -> None:  # noqa: F811
    """Two jobs of one event take turns without holding a transaction through SMTP: the second waits
    while the first's attempt runs, and sends only once that attempt is over with no mail recorded."""
    ana = make_user()
    other = make_job(ana.id, "send_email", {"template": "signup_existing", "event_key": "busy"},
                     status=JobStatus.running, worker="other-host:2:live")  # fmt: skip
    _left_sending("busy", other, "other-host:2:live")
    job_id = make_job(ana.id, "send_email", {"template": "signup_existing", "event_key": "busy"})
    runner = threading.Thread(target=run_job, args=(job_id, send_email))
    runner.start()
    try:
        time.sleep(2.5)
        assert smtp.handler.messages == []  # the other attempt may still send it
        with session_scope() as session:  # that attempt ends (the reaper's verdict on a dead worker)
            session.execute(update(Job).where(Job.id == other).values(status=JobStatus.failed))
    finally:
        runner.join(timeout=30)
    assert len(smtp.handler.messages) == 1
    assert _delivery("busy").status == "sent"


def test_a_run_waiting_for_another_attempt_reads_nothing_from_s3_until_it_can_claim(smtp) -> None:  # noqa: F811
    """A portraits_ready mail another live attempt is sending: the waiting run, which looks again
    every BUSY_POLL_SECONDS, reads no picture from S3 while it waits, and reads each inline one once
    when it claims the row after that attempt is over.

    Before: every look gathered the mail first (the thumbnails read from S3, then dropped), for as
    long as the other attempt talked to a slow SMTP server."""
    ana = make_user()
    pictures_job, portraits = make_portraits(ana, 2, seed=3)
    mail = {"template": "portraits_ready", "job_id": str(pictures_job), "event_key": "busy-pictures"}
    other = make_job(ana.id, "send_email", mail, status=JobStatus.running, worker="other-host:3:live")
    _left_sending("busy-pictures", other, "other-host:3:live")
    job_id = make_job(ana.id, "send_email", mail)
    reads: list[str] = []

    def count_read(params: dict, **kwargs: object) -> None:  # every GetObject this process asks S3
        reads.append(params["Key"])

    events = storage.client().meta.events
    events.register("before-parameter-build.s3.GetObject", count_read)
    runner = threading.Thread(target=run_job, args=(job_id, send_email))
    runner.start()
    try:
        time.sleep(2.5)  # the waiting run looks three times
        with session_scope() as session:
            assert session.get(Job, job_id).status is JobStatus.running  # it is waiting, not ended
        assert smtp.handler.messages == []
        assert reads == [], f"{len(reads)} S3 reads while another attempt was sending the mail"
    finally:  # that attempt ends (the reaper's verdict on a dead worker): the waiting run goes on
        with session_scope() as session:
            session.execute(update(Job).where(Job.id == other).values(status=JobStatus.failed))
        runner.join(timeout=30)
        events.unregister("before-parameter-build.s3.GetObject", count_read)
    assert sorted(reads) == sorted(p.thumb_key for p in portraits)  # gathered once, to send it
    [received] = smtp.handler.messages
    assert received.rcpt_tos == [ana.email]
    assert _delivery("busy-pictures").status == "sent"
