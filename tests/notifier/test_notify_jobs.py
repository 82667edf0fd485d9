"""The send_email job on the real stack (Postgres, Redis, S3 from tests/conftest.py) and a real
SMTP server (aiosmtpd), run by the real job runner in this process."""

import hashlib
import io
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from html import unescape

import httpx
import pytest
from PIL import Image
from sqlalchemy import select

from services.notifier.tasks import send_email
from shared import storage
from shared.config import get_settings
from shared.db import session_scope
from shared.jobs import run_job
from shared.models import EmailDelivery, EmailToken, Job, JobStatus, Likeness, Portrait, User
from tests.notifier.mailserver import MailServer

PUBLIC_URL = "https://studio.test"


@pytest.fixture
def smtp(stack, start_mail_server) -> Iterator[MailServer]:  # noqa: ANN001
    """Point the settings of this process at a fresh aiosmtpd server (and a public URL)."""
    server = start_mail_server()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SMTP_HOST", server.host)
        mp.setenv("SMTP_PORT", str(server.port))
        mp.setenv("PUBLIC_URL", PUBLIC_URL)
        mp.setenv("SMTP_FROM", "Portrait Studio <portraits@studio.test>")
        get_settings.cache_clear()
        yield server
    get_settings.cache_clear()


def make_user(*, locale: str = "en", verified: bool = True, email_results: bool = True) -> User:
    with session_scope() as session:
        user = User(
            email=f"user-{uuid.uuid4().hex[:10]}@example.com",
            password_hash="not-a-real-hash",
            locale=locale,
            email_verified_at=datetime.now(UTC) if verified else None,
            email_results=email_results,
        )
        session.add(user)
    return user


def make_job(user_id: uuid.UUID | None, kind: str, input: dict, **values) -> uuid.UUID:  # noqa: ANN003
    """A job row without an outbox row: only the runner in this test process will run it."""
    with session_scope() as session:
        job = Job(id=uuid.uuid4(), user_id=user_id, kind=kind, input=input, max_attempts=5, **values)
        session.add(job)
    return job.id


def send(user_id: uuid.UUID | None, **input) -> Job:  # noqa: ANN003
    job_id = make_job(user_id, "send_email", input)
    run_job(job_id, send_email)
    with session_scope() as session:
        return session.get(Job, job_id)


def png_bytes(colour: tuple[int, int, int], size: tuple[int, int] = (64, 96)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def make_portraits(user: User, count: int, seed: int) -> tuple[uuid.UUID, list[Portrait]]:
    """A finished generate job with `count` portraits of distinct colours, stored in S3."""
    job_id = make_job(user.id, "generate_portraits", {}, status=JobStatus.succeeded)
    portraits = []
    with session_scope() as session:
        for i in range(count):
            pid = uuid.uuid4()
            colour = ((seed * 70 + i * 23) % 256, (i * 41) % 256, (seed * 90 + 200 - i * 17) % 256)
            key = storage.user_key(user.id, "portraits", str(job_id), f"{pid}.png")
            thumb = storage.user_key(user.id, "portraits", str(job_id), f"{pid}_thumb.jpg")
            storage.put_bytes(key, png_bytes(colour, (512, 768)), "image/png")
            storage.put_bytes(thumb, png_bytes(colour), "image/jpeg")
            portrait = Portrait(
                id=pid, user_id=user.id, job_id=job_id, style=("black-white", "golden-park")[i % 2],
                seed=i, object_key=key, thumb_key=thumb, width=512, height=768,
                identity_score=0.9 - i * 0.05, meta={"colour": colour},
            )  # fmt: skip
            session.add(portrait)
            portraits.append(portrait)
    return job_id, portraits


def links(html: str) -> list[str]:
    return [unescape(h) for h in re.findall(r'href="([^"]+)"', html)]


def test_portraits_ready_carries_this_users_pictures_and_working_links(smtp):
    ana, bob = make_user(), make_user()
    job_id, portraits = make_portraits(ana, 8, seed=1)
    bob_job, bob_portraits = make_portraits(bob, 2, seed=2)

    job = send(ana.id, template="portraits_ready", job_id=str(job_id),
               event_key=f"job:{job_id}:portraits_ready")  # fmt: skip
    assert job.status == JobStatus.succeeded, job.error_message
    assert job.result["sent"] and job.result["inline_images"] == 6

    [received] = smtp.handler.messages
    assert received.rcpt_tos == [ana.email]
    msg = received.parse()
    assert msg["Subject"] == "Your 8 portraits are ready"
    text_part, related = msg.get_payload()
    html_part, *pictures = related.get_payload()
    html = html_part.get_content()
    # The six best, in rank order, inline as PNGs of the right colours.
    cids = re.findall(r'src="cid:([^"]+)"', html)
    assert len(cids) == len(pictures) == 6
    for cid, part, portrait in zip(cids, pictures, portraits[:6], strict=True):
        assert part["Content-ID"] == f"<{cid}>"
        image = Image.open(io.BytesIO(part.get_content()))
        assert image.format == "PNG"
        centre = image.convert("RGB").getpixel((image.width // 2, image.height // 2))
        assert max(abs(a - b) for a, b in zip(centre, portrait.meta["colour"], strict=True)) < 12
    # Every download link is presigned for 7 days and returns exactly that portrait of Ana's.
    downloads = [u for u in links(html) if "X-Amz-Signature" in u]
    assert len(downloads) == 8 + 6  # the list, plus each inline picture links to its file
    assert all("X-Amz-Expires=604800" in u for u in downloads)
    expected = {storage.get_bytes(p.object_key) for p in portraits}
    for url in set(downloads):
        assert f"/users/{ana.id}/portraits/{job_id}/" in url
        response = httpx.get(url, timeout=10)
        assert response.status_code == 200 and response.content in expected
    assert f"{PUBLIC_URL}/#/gallery?job={job_id}" in links(html)
    assert "7 days" in text_part.get_content() and "7 days" in html
    # Nothing of Bob's anywhere in the message.
    raw = received.data.decode("ascii")
    for secret in (str(bob.id), str(bob_job), *(str(p.id) for p in bob_portraits), bob.email):
        assert secret not in raw
    with session_scope() as session:
        delivery = session.scalar(
            select(EmailDelivery).where(EmailDelivery.event_key == f"job:{job_id}:portraits_ready")
        )
        assert delivery.status == "sent" and delivery.message_id == msg["Message-ID"]


def test_someone_elses_job_is_not_mailed(smtp):
    ana, bob = make_user(), make_user()
    bob_job, _ = make_portraits(bob, 1, seed=3)
    job = send(ana.id, template="portraits_ready", job_id=str(bob_job), event_key="steal")
    assert job.status == JobStatus.failed and job.error_code == "not_found"
    assert smtp.handler.messages == []


def test_the_same_event_sends_one_mail(smtp):
    ana = make_user()
    job_id, _ = make_portraits(ana, 2, seed=4)
    event = f"job:{job_id}:portraits_ready"
    first = send(ana.id, template="portraits_ready", job_id=str(job_id), event_key=event)
    second = send(ana.id, template="portraits_ready", job_id=str(job_id), event_key=event)
    assert first.result["sent"] is True
    assert second.status == JobStatus.succeeded
    assert second.result == {"sent": False, "skipped": "already_sent",
                             "message_id": first.result["message_id"]}  # fmt: skip
    run_job(first.id, send_email)  # a redelivered task of a finished job: the claim refuses it
    assert len(smtp.handler.messages) == 1


def test_portraits_deleted_meanwhile_skip_the_mail_without_a_crash(smtp):
    """An erasure deletes the files first, then the rows: a mail job between the two read rows
    whose pictures were gone, crashed (NoSuchKey, an ERROR with its traceback) and was retried."""
    ana = make_user()
    job_id, _ = make_portraits(ana, 2, seed=6)
    storage.delete_prefix(storage.user_prefix(ana.id))
    job = send(ana.id, template="portraits_ready", job_id=str(job_id), event_key=f"gone:{job_id}")
    assert (job.status, job.attempts) == (JobStatus.succeeded, 1)
    assert job.result == {"sent": False, "template": "portraits_ready", "skipped": "portraits_gone"}
    assert smtp.handler.messages == []


def test_a_portrait_deleted_meanwhile_leaves_the_others_in_the_mail(smtp):
    """One picture its user deleted while the mail was being made does not cancel the whole mail."""
    ana = make_user()
    job_id, portraits = make_portraits(ana, 3, seed=7)
    storage.delete_keys([k for k in (portraits[0].object_key, portraits[0].thumb_key) if k])
    job = send(ana.id, template="portraits_ready", job_id=str(job_id), event_key=f"one-gone:{job_id}")
    assert job.status == JobStatus.succeeded and job.result["sent"], job.result
    assert job.result["inline_images"] == 2 and len(smtp.handler.messages) == 1


@pytest.mark.parametrize(
    ("user_kwargs", "reason"),
    [({"email_results": False}, "email_results_off"), ({"verified": False}, "address_not_verified")],
)
def test_result_emails_respect_the_users_choice(smtp, user_kwargs, reason):
    user = make_user(**user_kwargs)
    job_id, _ = make_portraits(user, 1, seed=5)
    job = send(user.id, template="portraits_ready", job_id=str(job_id), event_key=reason)
    assert job.status == JobStatus.succeeded
    assert job.result == {"sent": False, "template": "portraits_ready", "skipped": reason}
    assert smtp.handler.messages == []


def test_korean_user_gets_a_korean_mail(smtp):
    min_ = make_user(locale="ko")
    with session_scope() as session:
        likeness = Likeness(user_id=min_.id, class_word="man", trigger_word="sks",
                            base_model="sd15", status="ready", photo_ids=["a"] * 12)  # fmt: skip
        session.add(likeness)
    job = send(min_.id, template="training_finished", likeness_id=str(likeness.id), event_key="ko")
    assert job.result["sent"], job.error_message
    [received] = smtp.handler.messages
    headers = received.data.split(b"\r\n\r\n", 1)[0].decode("ascii")
    assert re.search(r"^Subject: =\?utf-8\?", headers, re.M | re.I)
    msg = received.parse()
    assert msg["Subject"] == "얼굴 모델 학습이 끝났습니다. 이제 인물 사진을 만들어 보세요"
    assert msg["Content-Language"] == "ko"
    assert "사진 12장" in msg.get_body(("plain",)).get_content()


def test_failure_mail_explains_the_failure(smtp):
    ana = make_user()
    failed = make_job(ana.id, "train_likeness", {}, status=JobStatus.failed,
                      error_code="too_few_photos",
                      error_message="3 of your photos had no clear face; upload 5 more.")  # fmt: skip
    job = send(ana.id, template="job_failed", job_id=str(failed), event_key=f"job:{failed}:failed")
    assert job.result["sent"], job.error_message
    text = smtp.handler.messages[0].parse().get_body(("plain",)).get_content()
    assert "3 of your photos had no clear face; upload 5 more." in text
    assert f"{PUBLIC_URL}/#/photos" in text


def test_korean_mails_name_styles_and_failures_in_korean(smtp):
    """Style names come from the styles' YAML in the reader's language; a failure the worker stored
    as catalogue sentences (shared/i18n.py) is told in Korean, with its numbers."""
    min_ = make_user(locale="ko")
    job_id, _ = make_portraits(min_, 2, seed=3)
    job = send(min_.id, template="portraits_ready", job_id=str(job_id), event_key=f"job:{job_id}:ready")
    assert job.result["sent"], job.error_message
    text = smtp.handler.messages[0].parse().get_body(("plain",)).get_content()
    assert "흑백" in text and "골든아워 공원" in text and "Black-and-white" not in text

    sentences = [{"key": "job.too_few_photos", "values": {"count": 3, "more": 5, "needed": 8}}]
    english = "Only 3 photos have a clear face of you; upload 5 more (at least 8 are needed)."
    failed = make_job(min_.id, "train_likeness", {}, status=JobStatus.failed, error_code="too_few_photos",
                      error_message=english, result={"error_sentences": sentences})  # fmt: skip
    job = send(min_.id, template="job_failed", job_id=str(failed), event_key=f"job:{failed}:failed")
    assert job.result["sent"], job.error_message
    text = smtp.handler.messages[1].parse().get_body(("plain",)).get_content()
    assert "얼굴이 선명하게 나온 사진이 3장뿐입니다. 5장 더 올려 주세요(최소 8장 필요)." in text
    assert "Only 3 photos" not in text


def test_smtp_server_that_refuses_then_accepts(smtp):
    smtp.handler.refuse = 2
    ana = make_user()
    job = send(ana.id, template="signup_existing", event_key="retry")
    assert job.status == JobStatus.succeeded and job.result["attempts"] == 3
    assert smtp.handler.attempts == 3 and len(smtp.handler.messages) == 1


def test_permanent_smtp_error_fails_the_job_with_the_reply(smtp):
    ana = make_user()
    smtp.handler.refuse = 99
    smtp.handler.refuse_reply = f"550 5.1.1 <{ana.email}>: Recipient address rejected"
    job = send(ana.id, template="signup_existing", event_key="refused")
    assert job.status == JobStatus.failed and job.error_code == "smtp_failed"
    assert "550 5.1.1 <<recipient>>: Recipient address rejected" in job.error_message
    assert ana.email not in job.error_message
    with session_scope() as session:
        delivery = session.scalar(select(EmailDelivery).where(EmailDelivery.event_key == "refused"))
        assert delivery.status == "failed" and "550" in delivery.error


def token_of(received, route: str) -> str:  # noqa: ANN001
    text = received.parse().get_body(("plain",)).get_content()
    match = re.search(rf"{re.escape(PUBLIC_URL)}/#/{route}\?token=([A-Za-z0-9_\-]+)", text)
    assert match, text
    return match.group(1)


def test_verify_and_reset_links_carry_single_use_tokens_stored_hashed(smtp):
    ana = make_user(verified=False)
    assert send(ana.id, template="verify_email", event_key="v1").result["sent"]
    raw = token_of(smtp.handler.messages[0], "verify")
    with session_scope() as session:
        [token] = session.scalars(select(EmailToken).where(EmailToken.user_id == ana.id)).all()
        assert token.purpose == "verify_email" and token.used_at is None
        assert token.token_hash == hashlib.sha256(raw.encode()).hexdigest() != raw
        lifetime = token.expires_at - datetime.now(UTC)
        assert timedelta(hours=47) < lifetime <= timedelta(hours=48)

    assert send(ana.id, template="reset_password", event_key="r1").result["sent"]
    assert send(ana.id, template="reset_password", event_key="r2").result["sent"]
    first, second = (token_of(m, "reset") for m in smtp.handler.messages[1:])
    with session_scope() as session:
        resets = session.scalars(
            select(EmailToken).where(
                EmailToken.user_id == ana.id, EmailToken.purpose == "reset_password"
            )  # fmt: skip
        ).all()
    assert [t.token_hash for t in resets] == [hashlib.sha256(second.encode()).hexdigest()]
    assert first != second
    assert timedelta(minutes=29) < resets[0].expires_at - datetime.now(UTC) <= timedelta(minutes=30)


def test_goodbye_mail_after_erasure_leaves_no_address_behind(smtp):
    address = f"gone-{uuid.uuid4().hex[:8]}@example.com"
    job = send(None, template="data_erased", to=address, locale="ko", event_key="bye")
    assert job.status == JobStatus.succeeded and job.result["sent"]
    [received] = smtp.handler.messages
    assert received.rcpt_tos == [address]
    assert received.parse()["Subject"] == "데이터가 삭제되었습니다"
    assert "to" not in job.input and address not in str(job.result)
    with session_scope() as session:
        delivery = session.scalar(select(EmailDelivery).where(EmailDelivery.event_key == "bye"))
        assert delivery.user_id is None and address not in str(delivery.__dict__)


@pytest.mark.parametrize(
    ("address", "words"),
    [
        ("josé@example.com", "cannot be written in a mail header"),  # NonASCIILocalPartDefect
        ("jose@exämple.com", "cannot take this message"),  # needs SMTPUTF8, which the server lacks
    ],
)
def test_an_address_that_can_never_be_mailed_fails_once_recorded(
    smtp, start_mail_server, monkeypatch, address, words
):
    """Accounts from before sign-up refused such addresses: a permanent failure, recorded on the
    delivery row, after one attempt (no crash, no retry). The server offers no SMTPUTF8, like the
    local stack's (`python -m aiosmtpd` without -u)."""
    strict = start_mail_server(enable_SMTPUTF8=False)
    monkeypatch.setenv("SMTP_PORT", str(strict.port))
    get_settings.cache_clear()
    with session_scope() as session:
        user = User(email=address.replace("@", f"-{uuid.uuid4().hex[:6]}@"), password_hash="x")
        session.add(user)
    job = send(user.id, template="signup_existing", event_key=f"never-{user.id}")
    assert (job.status, job.error_code, job.attempts) == (JobStatus.failed, "smtp_failed", 1), (
        job.error_message
    )
    assert words in job.error_message and not strict.handler.messages
    with session_scope() as session:
        delivery = session.scalar(select(EmailDelivery).where(EmailDelivery.event_key == f"never-{user.id}"))
        assert delivery.status == "failed" and words in delivery.error


def test_the_training_mail_counts_the_photos_really_used(smtp):
    """10 photos were chosen, training set 3 aside (someone else's, no clear face): "trained on 7"."""
    ana = make_user()
    with session_scope() as session:
        likeness = Likeness(user_id=ana.id, class_word="woman", trigger_word="sks", base_model="sd15",
                            status="ready", photo_ids=[str(uuid.uuid4()) for _ in range(10)],
                            meta={"photos_used": 7})  # fmt: skip
        session.add(likeness)
    job = send(ana.id, template="training_finished", likeness_id=str(likeness.id), event_key="used")
    assert job.result["sent"], job.error_message
    text = smtp.handler.messages[0].parse().get_body(("plain",)).get_content()
    assert "We trained your likeness on 7 of your photos." in text


def test_a_mail_server_down_past_the_last_attempt_is_waited_out_not_lost(smtp, monkeypatch):
    """A mail server that does not answer or answers 4xx is an outage, waited out for days
    (MAIL_OUTAGE_WINDOW_SECONDS, after RFC 5321 4.5.4.1): before, the job's five attempts (about 20
    minutes) ran out and the mail was lost. Past the window the job fails and keeps no address."""
    monkeypatch.setenv("SMTP_ATTEMPTS", "1")  # one SMTP try per job attempt: the test stays short
    get_settings.cache_clear()
    smtp.handler.refuse = 10**6  # "451 4.3.0 Mailbox busy" to every message
    ana = make_user()
    job_id = make_job(
        ana.id, "send_email", {"template": "signup_existing", "event_key": "outage"}, attempts=4
    )

    run_job(job_id, send_email)  # attempt 5 of 5: the last one
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job.status == JobStatus.queued and job.error_code == "mail_unavailable", job.error_message
        assert job.attempts == 4 and job.outage_since is not None  # the attempt was given back
        assert job.error_message.startswith("The mail server is not answering; we try again in")
    smtp.handler.refuse = 0  # the server is back
    run_job(job_id, send_email)
    with session_scope() as session:
        assert session.get(Job, job_id).status == JobStatus.succeeded
    assert [m.rcpt_tos for m in smtp.handler.messages] == [[ana.email]]

    monkeypatch.setenv("MAIL_OUTAGE_WINDOW_SECONDS", "0")  # an outage older than its window
    get_settings.cache_clear()
    smtp.handler.refuse = 10**6
    goodbye = {"template": "data_erased", "event_key": "goodbye-outage", "to": "gone@example.com"}
    job_id = make_job(None, "send_email", goodbye, attempts=4)
    run_job(job_id, send_email)
    with session_scope() as session:
        job = session.get(Job, job_id)
        assert job.status == JobStatus.failed and job.error_code == "smtp_failed"
        assert "to" not in job.input  # the erased account's address is not kept
