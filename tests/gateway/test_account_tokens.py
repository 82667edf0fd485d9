"""Account promises through the whole platform (gateway -> outbox -> notify worker -> SMTP catcher):
signing up again changes nothing but sends a warning; a password reset ends every session; mailed
links work once and expire when they say; an expired access token is refused."""

import re
import threading
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import jwt
from sqlalchemy import func, select, text, update

from shared.config import get_settings
from shared.db import session_scope
from shared.localstack import free_port, wait_for_port
from shared.models import EmailToken, User
from shared.security import token_hash
from tests.conftest import Api, Platform, Processes, wait_until
from tests.notifier.test_notify_worker import mails_to

BAD_LINK = {"detail": "This link is invalid or has expired."}
CONFIRMED = {"detail": "Thanks, your email address is confirmed."}


def _mail(platform: Platform, address: str, subject: str, count: int = 1):  # noqa: ANN202
    found = wait_until(
        lambda: [m for m in mails_to(platform, address) if m["Subject"] == subject][count - 1 :] or None,
        timeout=60,
        what=f"mail {subject!r} #{count}",
    )
    return found[0]


def _token(mail, route: str) -> str:
    text = mail.get_body(("plain",)).get_content()
    return re.search(rf"#/{route}\?token=([A-Za-z0-9_\-]+)", text).group(1)


def _login(api: Api, email: str, password: str) -> int:
    return api.post("/v1/auth/login", json={"email": email, "password": password}).status_code


def test_signing_up_again_keeps_the_password_and_warns_the_owner(api: Api, platform: Platform) -> None:
    user = api.new_user(consent=False)
    again = api.post("/v1/auth/signup", json={"email": user.email, "password": "an attacker's choice"})
    assert again.status_code == 202
    _mail(platform, user.email, "Someone tried to sign up with your address")
    assert _login(api, user.email, user.password) == 200
    assert _login(api, user.email, "an attacker's choice") == 401


def test_password_reset_revokes_every_refresh_token_and_its_link_works_once(
    api: Api, platform: Platform
) -> None:
    user = api.new_user(consent=False)
    other_device = api.post("/v1/auth/login", json={"email": user.email, "password": user.password}).json()
    assert api.post("/v1/auth/password-reset", json={"email": user.email}).status_code == 202
    token = _token(_mail(platform, user.email, "Reset your password"), "reset")
    with session_scope() as session:  # valid for the configured minutes, not more
        owner = select(User.id).where(User.email == user.email).scalar_subquery()
        row = session.scalar(
            select(EmailToken).where(EmailToken.purpose == "reset_password", EmailToken.user_id == owner)
        )
        lifetime = row.expires_at - row.created_at
    assert abs(lifetime - timedelta(minutes=get_settings().password_reset_minutes)) < timedelta(seconds=5)

    new = {"token": token, "password": "a brand new password"}
    assert api.post("/v1/auth/password-reset/confirm", json=new).status_code == 200
    for refresh in (user.refresh_token, other_device["refresh_token"]):
        assert api.post("/v1/auth/refresh", json={"refresh_token": refresh}).status_code == 401
    # The access tokens issued before end too (the old ones worked on for their 15 minutes, even
    # to erase the account).
    for access in (user.access_token, other_device["access_token"]):
        stale = {"Authorization": f"Bearer {access}"}
        assert api.get("/v1/me", headers=stale).status_code == 401
        assert api.delete("/v1/me", headers=stale).status_code == 401
    assert _login(api, user.email, user.password) == 401
    fresh = api.post("/v1/auth/login", json={"email": user.email, "password": "a brand new password"})
    assert (
        api.get("/v1/me", headers={"Authorization": f"Bearer {fresh.json()['access_token']}"}).status_code
        == 200
    )
    spent = api.post("/v1/auth/password-reset/confirm", json={**new, "password": "yet another one!"})
    assert spent.status_code == 400 and spent.json() == BAD_LINK
    assert _login(api, user.email, "a brand new password") == 200


def test_a_password_reset_ends_the_lock_of_too_many_wrong_passwords(api: Api, platform: Platform) -> None:
    """The 429 of LOGIN_FAILURES_PER_ACCOUNT says "or reset your password"; after the reset the new
    password still got 429 for the rest of the 15 minutes (a newcomer's finding): anyone could keep
    an account locked with 10 guesses, and the way out the answer named did nothing."""
    user = api.new_user(consent=False)
    wrong = {"email": user.email, "password": "not the password"}
    assert [api.post("/v1/auth/login", json=wrong).status_code for _ in range(10)] == [401] * 10
    assert _login(api, user.email, user.password) == 429
    assert api.post("/v1/auth/password-reset", json={"email": user.email}).status_code == 202
    token = _token(_mail(platform, user.email, "Reset your password"), "reset")
    new = {"token": token, "password": "a brand new password"}
    assert api.post("/v1/auth/password-reset/confirm", json=new).status_code == 200
    assert _login(api, user.email, "a brand new password") == 200
    assert _login(api, user.email, user.password) == 401  # the old one is counted again from zero


def test_a_confirmation_link_opened_again_says_the_address_is_confirmed(api: Api, platform: Platform) -> None:
    """A second click on the link that worked answered "This link is invalid or has expired"."""
    email = f"twice-{uuid.uuid4().hex[:8]}@example.com"
    signup = {"email": email, "password": "correct horse battery"}
    assert api.post("/v1/auth/signup", json=signup).status_code == 202
    verify = _token(_mail(platform, email, "Confirm your email address"), "verify")
    first = api.post("/v1/auth/verify-email", json={"token": verify})
    again = api.post("/v1/auth/verify-email", json={"token": verify})
    assert first.status_code == again.status_code == 200 and again.json() == first.json(), again.text
    forged = api.post("/v1/auth/verify-email", json={"token": verify[:-2] + "xx"})
    assert forged.status_code == 400 and forged.json() == BAD_LINK


def _waiting_for_a_link() -> int:
    """How many database backends wait for a lock to read an emailed link's row. Counted by their
    statement: the second of two waiters for a row waits on the first (its tuple lock), not on the
    holder, so `pg_blocking_pids` of the holder would count one."""
    with session_scope() as session:
        return int(
            session.scalar(
                select(func.count())
                .select_from(text("pg_stat_activity"))
                .where(text("wait_event_type = 'Lock' AND query LIKE '%FROM email_tokens%FOR UPDATE%'"))
            )
        )


def _at_once(url: str, path: str, bodies: list[dict], link: str) -> list[httpx.Response]:
    """POST each of `bodies` to `path` at the same instant: the test holds the link's row (FOR UPDATE)
    until every request waits for it, then lets go, so they race for it as two clicks of the same
    instant would, every run. `url`: a gateway whose lock_timeout outlasts the wait."""
    answers: list[httpx.Response | None] = [None] * len(bodies)

    def send(i: int) -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            answers[i] = client.post(path, json=bodies[i])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(bodies))]
    with session_scope() as holder:
        held = holder.scalar(
            select(EmailToken.id).where(EmailToken.token_hash == token_hash(link)).with_for_update()
        )
        assert held is not None
        for thread in threads:
            thread.start()
        wait_until(
            lambda: _waiting_for_a_link() == len(bodies), timeout=30, interval=0.02, what="every request"
        )
        holder.rollback()  # lets go: they race for the row
    for thread in threads:
        thread.join(timeout=60)
    assert all(answers), answers
    return answers  # type: ignore[return-value]


def test_two_clicks_at_once_on_a_confirmation_link_both_say_confirmed(
    api: Api, platform: Platform, procs: Processes
) -> None:
    """The route read the link once to tell a spent one ("confirmed"), then again to spend it: a click
    that read it unspent, then waited for a twin click's lock, found it spent by then and answered
    "This link is invalid or has expired" though the address was confirmed. A reset link stays single
    use: of two at once, one sets the password, the other hears the link is spent."""
    port = free_port()  # a gateway that waits for row locks longer than the test holds one
    patient = {"DATABASE_LOCK_TIMEOUT_MS": "20000", "DATABASE_READ_TIMEOUT": "30"}
    procs.start("gateway-patient-locks", "gateway", "--port", str(port), env=patient)
    email = f"at-once-{uuid.uuid4().hex[:8]}@example.com"
    assert (
        api.post("/v1/auth/signup", json={"email": email, "password": "correct horse battery"}).status_code
        == 202
    )
    verify = _token(_mail(platform, email, "Confirm your email address"), "verify")
    assert api.post("/v1/auth/password-reset", json={"email": email}).status_code == 202
    reset = _token(_mail(platform, email, "Reset your password"), "reset")
    wait_for_port(port, timeout=60)
    url = f"http://127.0.0.1:{port}"

    both = _at_once(url, "/v1/auth/verify-email", [{"token": verify}] * 2, verify)
    assert [r.status_code for r in both] == [200, 200], [r.text for r in both]
    assert both[0].json() == both[1].json() == CONFIRMED
    with session_scope() as session:
        assert session.scalar(select(User.email_verified_at).where(User.email == email)) is not None

    passwords = ["the first new password", "the second new password"]
    bodies = [{"token": reset, "password": p} for p in passwords]
    answers = _at_once(url, "/v1/auth/password-reset/confirm", bodies, reset)
    assert sorted(r.status_code for r in answers) == [200, 400], [r.text for r in answers]
    won = next(i for i, r in enumerate(answers) if r.status_code == 200)
    assert answers[1 - won].json() == BAD_LINK
    assert _login(api, email, passwords[won]) == 200
    assert _login(api, email, passwords[1 - won]) == 401


def test_mailed_links_expire_on_time(api: Api, platform: Platform) -> None:
    email = f"late-{uuid.uuid4().hex[:8]}@example.com"
    assert (
        api.post("/v1/auth/signup", json={"email": email, "password": "correct horse battery"}).status_code
        == 202
    )
    verify = _token(_mail(platform, email, "Confirm your email address"), "verify")
    assert api.post("/v1/auth/password-reset", json={"email": email}).status_code == 202
    reset = _token(_mail(platform, email, "Reset your password"), "reset")
    with session_scope() as session:  # both links reach their expiry time
        session.execute(
            update(EmailToken)
            .where(EmailToken.user_id == select(User.id).where(User.email == email).scalar_subquery())
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
    late = api.post("/v1/auth/verify-email", json={"token": verify})
    assert late.status_code == 400 and late.json() == BAD_LINK
    late = api.post("/v1/auth/password-reset/confirm", json={"token": reset, "password": "too late now!!"})
    assert late.status_code == 400 and late.json() == BAD_LINK
    assert _login(api, email, "correct horse battery") == 200


def test_an_expired_access_token_is_refused(api: Api) -> None:
    user = api.new_user(consent=False)
    me = api.get("/v1/me", headers=user.auth).json()
    now = datetime.now(UTC)

    issued = jwt.decode(user.access_token, options={"verify_signature": False})
    bound, sid = issued["pwd"], issued["sid"]  # the password's binding, the sign-in session

    def token(exp: datetime) -> dict[str, str]:
        claims = {
            "sub": me["id"],
            "type": "access",
            "pwd": bound,
            "sid": sid,
            "iat": exp - timedelta(minutes=15),
            "exp": exp,
        }
        return {"Authorization": f"Bearer {jwt.encode(claims, get_settings().secret_key, algorithm='HS256')}"}

    assert api.get("/v1/me", headers=token(now + timedelta(minutes=1))).status_code == 200
    expired = api.get("/v1/me", headers=token(now - timedelta(seconds=5)))
    assert expired.status_code == 401, expired.text


def test_an_access_token_expires_when_expires_in_says(api: Api) -> None:
    user = api.new_user(consent=False)
    tokens = api.post("/v1/auth/login", json={"email": user.email, "password": user.password}).json()
    claims = jwt.decode(tokens["access_token"], options={"verify_signature": False})
    assert tokens["expires_in"] == 15 * 60  # ACCESS_TOKEN_MINUTES
    assert abs(claims["exp"] - claims["iat"] - tokens["expires_in"]) <= 1, claims  # whole seconds
    refreshed = api.post("/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}).json()
    claims = jwt.decode(refreshed["access_token"], options={"verify_signature": False})
    assert refreshed["expires_in"] == 15 * 60
    assert abs(claims["exp"] - claims["iat"] - refreshed["expires_in"]) <= 1, claims


def test_logout_ends_the_sessions_access_tokens_at_once(api: Api) -> None:
    """A shared computer: after logout, the access token copied from that session is refused at once
    (not up to 15 minutes later), the refreshed ones of the same session too; another device's
    session of the same user goes on."""
    user = api.new_user(consent=False)
    refreshed = api.post("/v1/auth/refresh", json={"refresh_token": user.refresh_token}).json()
    newer = {"Authorization": f"Bearer {refreshed['access_token']}"}
    other = api.post("/v1/auth/login", json={"email": user.email, "password": user.password}).json()
    other_auth = {"Authorization": f"Bearer {other['access_token']}"}
    for auth in (user.auth, newer, other_auth):
        assert api.get("/v1/me", headers=auth).status_code == 200

    assert api.post("/v1/auth/logout", json={"refresh_token": refreshed["refresh_token"]}).status_code == 204
    for auth in (user.auth, newer):
        gone = api.get("/v1/me", headers=auth)
        assert gone.status_code == 401, gone.text
        assert gone.json() == {"detail": "Please log in again."}
    assert api.get("/v1/me", headers=other_auth).status_code == 200
    assert api.post("/v1/auth/refresh", json={"refresh_token": other["refresh_token"]}).status_code == 200


def test_a_token_of_an_erased_account_says_the_account_is_gone(api: Api) -> None:
    """It heard "Please log in again.", and the login then said "Wrong email or password." Only a
    token we signed hears it: a garbage or forged one keeps the general sentence."""
    user = api.new_user()
    with session_scope() as session:  # what a finished erasure leaves: no row
        session.execute(text("DELETE FROM users WHERE email = :e"), {"e": user.email})
    gone = "This account no longer exists: it was erased. Sign up again to use the service."
    # The ORM path, the one-round-trip reads (services/gateway/api/reads.py), the event stream.
    for path in ["/v1/photos", "/v1/me", f"/v1/jobs/{uuid.uuid4()}", f"/v1/jobs/{uuid.uuid4()}/events"]:
        r = api.get(path, headers=user.auth)
        assert (r.status_code, r.json()) == (401, {"detail": gone}), (path, r.text)
        assert r.headers["www-authenticate"] == "Bearer"
    r = api.get("/v1/me", headers={**user.auth, "Accept-Language": "ko"})
    assert r.json() == {"detail": "이 계정은 삭제되어 더 이상 없습니다. 서비스를 쓰려면 다시 가입해 주세요."}
    login = api.post("/v1/auth/login", json={"email": user.email, "password": user.password})
    assert login.status_code == 401, login.text
    claims = jwt.decode(user.access_token, options={"verify_signature": False})
    forged = jwt.encode(claims, "not-our-key-" * 4, algorithm="HS256")
    for token in (forged, "garbage", user.access_token + "x"):
        r = api.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
        assert (r.status_code, r.json()) == (401, {"detail": "Please log in again."}), r.text


def test_a_token_of_an_account_being_erased_says_so(api: Api) -> None:
    """It heard "Please log in again.", and the login then said the account is being erased (403).
    GET /v1/me still shows the erasure under way."""
    user = api.new_user()
    with session_scope() as session:  # what DELETE /v1/me leaves until the erasure is done
        erasing = "UPDATE users SET deleting = true, deleting_since = now() WHERE email = :e"
        session.execute(text(erasing), {"e": user.email})
    for path in ["/v1/photos", f"/v1/jobs/{uuid.uuid4()}", f"/v1/jobs/{uuid.uuid4()}/events"]:
        r = api.get(path, headers=user.auth)
        assert r.status_code == 401, (path, r.text)
        assert r.json()["detail"].startswith("This account is being erased, so it can no longer"), path
    r = api.get("/v1/photos", headers={**user.auth, "Accept-Language": "ko"})
    assert r.json()["detail"].startswith("이 계정을 지우는 중이라 더 이상 쓸 수 없습니다."), r.text
    me = api.get("/v1/me", headers=user.auth)
    assert me.status_code == 200 and me.json()["erasing_since"], me.text
    # A client that refreshes on 401 hears the same (it heard "Please log in again.").
    again = api.post("/v1/auth/refresh", json={"refresh_token": user.refresh_token})
    assert again.status_code == 401, again.text
    assert again.json()["detail"].startswith("This account is being erased"), again.text
