"""Email through the whole platform (tests/conftest.py): gateway -> outbox -> relay -> Celery
`notify` worker -> the stack's SMTP catcher (a Maildir)."""

import mailbox
import re
import uuid
from email import message_from_bytes, policy
from email.message import EmailMessage

from shared.contracts import SendEmail, Template
from shared.db import session_scope
from shared.jobs import enqueue
from shared.jobs.outbox import add_outbox
from shared.models import Job, JobStatus, User
from tests.conftest import Api, Platform, wait_until


def mails_to(platform: Platform, address: str) -> list[EmailMessage]:
    box = mailbox.Maildir(platform.stack.mail_dir, create=False)
    found = []
    for key in box.iterkeys():
        msg = message_from_bytes(box.get_bytes(key), policy=policy.default)
        if msg["To"] == address:
            found.append(msg)
    return found


def test_signup_mail_verifies_the_address_once(api: Api, platform: Platform) -> None:
    email = f"min-{uuid.uuid4().hex[:8]}@example.com"
    body = {"email": email, "password": "correct horse battery", "locale": "ko"}
    assert api.post("/v1/auth/signup", json=body).status_code == 202

    [mail] = wait_until(lambda: mails_to(platform, email), timeout=60, what="verification mail")
    assert mail["Subject"] == "이메일 주소를 확인해 주세요"
    text = mail.get_body(("plain",)).get_content()
    token = re.search(r"#/verify\?token=([A-Za-z0-9_\-]+)", text).group(1)

    assert api.post("/v1/auth/verify-email", json={"token": token}).status_code == 200
    login = api.post("/v1/auth/login", json={"email": email, "password": body["password"]}).json()
    me = api.get("/v1/me", headers={"Authorization": f"Bearer {login['access_token']}"}).json()
    assert me["email_verified"] is True
    # Spent: opened again it changes nothing and says the address is confirmed (not "invalid link").
    again = api.post("/v1/auth/verify-email", json={"token": token})
    assert again.status_code == 200 and again.json()["detail"] == "Thanks, your email address is confirmed."


def test_duplicate_deliveries_send_one_mail(api: Api, platform: Platform) -> None:
    user = api.new_user(consent=False)
    with session_scope() as session:
        user_id = session.query(User.id).filter(User.email == user.email).scalar()
        event = f"test:{uuid.uuid4()}"
        mail = SendEmail(template=Template.signup_existing, event_key=event)
        first = enqueue(session, mail, user_id=user_id)
        add_outbox(session, first)  # the same task published twice
        second = enqueue(session, mail, user_id=user_id)
        ids = [first.id, second.id]

    def finished() -> list[Job] | None:
        with session_scope() as session:
            jobs = [session.get(Job, job_id) for job_id in ids]
        return jobs if all(job.status.terminal for job in jobs) else None

    jobs = wait_until(finished, timeout=60, what="both email jobs finished")
    assert [job.status for job in jobs] == [JobStatus.succeeded] * 2
    assert sorted(bool(job.result["sent"]) for job in jobs) == [False, True]
    assert [job.attempts for job in jobs] == [1, 1]  # the duplicate delivery never ran
    wait_until(lambda: mails_to(platform, user.email), timeout=30, what="the mail")
    signup_mails = [m for m in mails_to(platform, user.email) if "sign up" in m["Subject"]]
    assert len(signup_mails) == 1
