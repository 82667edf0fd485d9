"""Accounts: uniform answers, refresh-token rotation and reuse detection, logout, rate limits,
the retention sweep, health and metrics."""

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import func, select, update

from services.photos.retention import sweep_expired_photos
from shared import storage
from shared.db import session_scope
from shared.models import Photo, RefreshToken, User
from shared.security import token_hash
from tests.conftest import Api, Platform, wait_until
from tests.pictures import astronaut_variants, jpeg


def test_sign_up_answers_the_same_whether_or_not_the_address_exists(api: Api) -> None:
    email = f"someone-{uuid.uuid4().hex[:8]}@example.com"
    body = {"email": email, "password": "a long password 1"}
    first = api.post("/v1/auth/signup", json=body)
    again = api.post("/v1/auth/signup", json={**body, "password": "another long one"})
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json()
    wrong_pw = api.post("/v1/auth/login", json={"email": email, "password": "not it at all"})
    nobody = api.post("/v1/auth/login", json={"email": "no-" + email, "password": "not it at all"})
    assert wrong_pw.status_code == nobody.status_code == 401
    assert wrong_pw.json() == nobody.json() == {"detail": "Wrong email or password."}
    r1 = api.post("/v1/auth/password-reset", json={"email": email})
    r2 = api.post("/v1/auth/password-reset", json={"email": "no-" + email})
    assert r1.status_code == r2.status_code == 202 and r1.json() == r2.json()


def _live_tokens(family_of: str) -> int:
    """How many refresh tokens of the session family that `family_of` belongs to can still be used."""
    with session_scope() as session:
        family = session.scalar(
            select(RefreshToken.family_id).where(RefreshToken.token_hash == token_hash(family_of))
        )
        return session.scalar(
            select(func.count()).where(
                RefreshToken.family_id == family,
                RefreshToken.used_at.is_(None),
                RefreshToken.revoked_at.is_(None),
            )
        )


def test_refresh_rotates_and_a_reused_token_ends_the_session(api: Api) -> None:
    user = api.new_user()
    first = api.post("/v1/auth/refresh", json={"refresh_token": user.refresh_token})
    assert first.status_code == 200
    rotated = first.json()
    assert rotated["refresh_token"] != user.refresh_token
    assert (
        api.get("/v1/me", headers={"Authorization": f"Bearer {rotated['access_token']}"}).status_code == 200
    )
    # Within seconds (a page reloaded mid-refresh) the spent token still works once more, but it
    # replaces the session instead of forking it: the pair minted first is revoked.
    again = api.post("/v1/auth/refresh", json={"refresh_token": user.refresh_token})
    assert again.status_code == 200
    assert _live_tokens(user.refresh_token) == 1
    replaced = again.json()["refresh_token"]
    newest = api.post("/v1/auth/refresh", json={"refresh_token": replaced})
    assert newest.status_code == 200
    # The replaced token comes back (from whoever held it): refused, and the family ends.
    assert api.post("/v1/auth/refresh", json={"refresh_token": rotated["refresh_token"]}).status_code == 401
    assert (
        api.post("/v1/auth/refresh", json={"refresh_token": newest.json()["refresh_token"]}).status_code
        == 401
    )
    assert _live_tokens(user.refresh_token) == 0


def test_a_spent_refresh_token_after_the_grace_window_ends_the_session(api: Api) -> None:
    user = api.new_user()
    rotated = api.post("/v1/auth/refresh", json={"refresh_token": user.refresh_token}).json()
    with session_scope() as session:  # later, a spent token is a stolen token
        session.execute(
            update(RefreshToken)
            .where(RefreshToken.used_at.is_not(None))
            .values(used_at=datetime.now(UTC) - timedelta(minutes=1))
        )
    # The old token comes back (stolen?): refused, and the whole family is revoked.
    assert api.post("/v1/auth/refresh", json={"refresh_token": user.refresh_token}).status_code == 401
    assert api.post("/v1/auth/refresh", json={"refresh_token": rotated["refresh_token"]}).status_code == 401


def test_logout_revokes_the_refresh_token(api: Api) -> None:
    user = api.new_user()
    assert api.post("/v1/auth/logout", json={"refresh_token": user.refresh_token}).status_code == 204
    assert api.post("/v1/auth/refresh", json={"refresh_token": user.refresh_token}).status_code == 401


def test_validation_errors_are_one_sentence_naming_the_fields(api: Api) -> None:
    r = api.post("/v1/auth/signup", json={"email": "not-an-email", "password": "short"})
    assert r.status_code == 422
    body = r.json()
    assert isinstance(body["detail"], str), body  # the same shape as every other error
    assert body["detail"].startswith("Please check these fields: email (")
    assert "password (" in body["detail"]
    assert {e["loc"][-1] for e in body["errors"]} == {"email", "password"}  # for programs
    documented = api.get("/openapi.json").json()["components"]["schemas"]["HTTPValidationError"]
    assert documented["properties"]["detail"]["type"] == "string"
    user = api.new_user()
    for path, words in [
        ("/v1/jobs?limit=many", "Please check this field: query parameter limit ("),
        ("/v1/jobs/not-an-id", "Please check this field: path parameter job_id ("),
    ]:
        r = api.get(path, headers=user.auth)
        assert r.status_code == 422 and r.json()["detail"].startswith(words), r.text
    r = api.post("/v1/portraits", json={"likeness_id": str(uuid.uuid4()), "styles": []}, headers=user.auth)
    assert (
        r.status_code == 422
        and r.json()["detail"] == "Please check this field: styles (must have at least 1 item)."
    )
    # pydantic's "Input should be greater than or equal to 1" read as the sentence around it does (a newcomer)
    body = {"likeness_id": str(uuid.uuid4()), "styles": ["black-white"], "count": 0}
    r = api.post("/v1/portraits", json=body, headers=user.auth)
    assert (
        r.status_code == 422 and r.json()["detail"] == "Please check this field: count (must be at least 1)."
    )
    r = api.post("/v1/auth/signup", json={"email": "a@example.com", "password": "short"})
    assert r.json()["detail"] == "Please check this field: password (must have at least 10 characters)."


def test_a_query_token_is_taken_only_by_the_event_stream_and_never_logged(
    api: Api, platform: Platform
) -> None:
    user = api.new_user()
    jobs = api.get("/v1/jobs", headers=user.auth).json()["jobs"]  # the sign-up mail
    events = api.follow_events(jobs[0]["id"], user)  # EventSource's way: ?access_token=
    assert events[-1]["status"] == "succeeded"
    for path in ("/v1/me", "/v1/jobs", f"/v1/jobs/{jobs[0]['id']}"):
        r = api.get(path, params={"access_token": user.access_token})
        assert r.status_code == 401, (path, r.status_code)
    gateway = next(p for p in platform.procs.running if "gateway" in p.log_path and p.poll() is None)
    log = Path(gateway.log_path)
    wait_until(lambda: "/v1/me?access_token=[redacted]" in log.read_text(), what="the access log line")
    assert "/events?access_token=[redacted]" in log.read_text()
    assert user.access_token not in log.read_text()
    assert user.access_token.split(".")[2] not in log.read_text()  # not even the signature


def test_auth_is_rate_limited(platform: Platform, procs) -> None:
    from shared.localstack import free_port, wait_for_port

    port = free_port()
    # The per-address and the per-account limits trip at the same try here, as by default (10 each).
    limits = {"AUTH_RATE_LIMIT": "3/minute", "LOGIN_FAILURES_PER_ACCOUNT": "3/15minutes"}
    procs.start("gateway-limited", "gateway", "--port", str(port), env=limits)
    wait_for_port(port, timeout=60)
    email, other = (
        f"x-{uuid.uuid4().hex[:10]}@example.com" for _ in range(2)
    )  # counted in the suite's Redis
    with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        codes = [
            client.post("/v1/auth/login", json={"email": email, "password": "y"}).status_code
            for _ in range(5)
        ]
        assert codes[:3] == [401, 401, 401] and codes[3:] == [429, 429]
        # The locked account's own wait, not the address's "wait a minute" (the account waits 15).
        r = client.post("/v1/auth/login", json={"email": email, "password": "y"})
        assert "tried with too many wrong passwords" in r.json()["detail"], r.text
        assert int(r.headers["Retry-After"]) > 60
        # Another account from this address: the address's limit, in its own words.
        r = client.post("/v1/auth/login", json={"email": other, "password": "y"})
        assert r.status_code == 429 and "Too many requests" in r.json()["detail"] and r.headers["Retry-After"]


def test_retention_sweep_deletes_old_photos_and_their_objects(api: Api) -> None:
    user = api.new_user()
    files = [("files", (f"{n}.jpg", jpeg(img), "image/jpeg")) for n, img in enumerate(astronaut_variants(2))]
    up = api.post("/v1/photos", headers=user.auth, files=files).json()
    photo_id, young_id = (uuid.UUID(p["id"]) for p in up["photos"])
    api.wait_job(up["job"]["id"], user)
    with session_scope() as session:
        key, young_key = (session.get(Photo, i).object_key for i in (photo_id, young_id))
        for pid, age in ((photo_id, timedelta(days=31)), (young_id, timedelta(days=29))):  # the limit: 30
            session.execute(update(Photo).where(Photo.id == pid).values(created_at=datetime.now(UTC) - age))
    assert storage.exists(key)
    assert sweep_expired_photos() >= 1
    assert not storage.exists(key)
    assert api.get(f"/v1/photos/{photo_id}", headers=user.auth).status_code == 404
    # 29 days old: kept, with its object
    assert storage.exists(young_key)
    assert api.get(f"/v1/photos/{young_id}", headers=user.auth).status_code == 200


def test_health_readiness_metrics_and_system(api: Api, platform: Platform) -> None:
    assert api.get("/healthz").text == "ok"
    assert api.get("/readyz").status_code == 200
    # Prometheus scrapes HEALTH_PORT (never exposed); the public port refuses with a sentence.
    public = api.get("/metrics")
    assert public.status_code == 404
    assert public.json() == {"detail": "Metrics are not served on the public port."}
    assert "studio_http_requests_total" not in public.text
    scraped = httpx.get(f"{platform.health_url}/metrics", timeout=10)
    assert scraped.status_code == 200 and scraped.headers["content-type"].startswith("text/plain")
    assert 'studio_http_requests_total{method="GET",route="/healthz",status="200"}' in scraped.text
    assert httpx.get(f"{platform.health_url}/readyz", timeout=10).text == "ready"
    system = api.get("/v1/system").json()
    assert system["model_preset"] == "tiny" and system["demo"] is True
    assert "noise" in system["message"]
    assert api.get("/openapi.json").json()["info"]["title"] == "Portrait Studio"


def test_non_finite_numbers_in_json_are_a_422_sentence(api: Api) -> None:
    """NaN, Infinity and 1e400 (Python's json accepts them) used to make the 422 itself a 500."""
    for raw in ("NaN", "-Infinity", "1e400"):
        body = '{"email":"n@example.com","password":' + raw + "}"
        r = api.post("/v1/auth/signup", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 422, (raw, r.text)
        assert r.json()["detail"].startswith("Please check this field: password ("), r.text


def test_a_422_does_not_echo_the_values_sent(api: Api) -> None:
    r = api.post("/v1/auth/signup", json={"email": "x@example.com", "password": "pw-123"})
    assert r.status_code == 422 and "pw-123" not in r.text, r.text
    assert r.json()["errors"] and all(set(e) == {"loc", "msg", "type"} for e in r.json()["errors"]), r.text


def test_malformed_json_is_named_in_a_sentence(api: Api) -> None:
    r = api.post("/v1/auth/signup", content='{"email": ', headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == "The request body is not valid JSON (at character 10).", r.text
    # The list for programs says it in words too, not the library's "JSON decode error".
    assert r.json()["errors"] == [
        {"loc": ["body", 10], "msg": "The request body is not valid JSON.", "type": "json_invalid"}
    ], r.text
    r = api.post(
        "/v1/auth/signup",
        content='{"email": ',
        headers={"content-type": "application/json", "Accept-Language": "ko"},
    )
    assert r.json()["errors"][0]["msg"] == "요청 본문이 올바른 JSON이 아닙니다.", r.text


def test_job_list_limit_and_kind_are_validated(api: Api) -> None:
    """limit 1..200 and kind one of shared.contracts: 422 sentences, never a 500 from Postgres
    (a negative LIMIT, a NUL byte)."""
    user = api.new_user()
    for query, words in [
        ("limit=-1", "query parameter limit ("),
        ("limit=0", "query parameter limit ("),
        ("limit=201", "query parameter limit ("),
        ("kind=%00", "query parameter kind ("),
        ("kind=nope", "query parameter kind ("),
    ]:
        r = api.get(f"/v1/jobs?{query}", headers=user.auth)
        assert r.status_code == 422 and words in r.json()["detail"], (query, r.text)
    r = api.get("/v1/jobs?kind=send_email&limit=1", headers=user.auth)
    assert r.status_code == 200 and [j["kind"] for j in r.json()["jobs"]] == ["send_email"], r.text


def test_nul_bytes_in_free_strings_never_reach_postgres(api: Api) -> None:
    """A NUL byte is refused in words (Postgres text cannot hold one; it used to be a 500)."""
    nul = "a\u0000b@example.com"
    for path, body in [
        ("/v1/auth/signup", {"email": nul, "password": "a long password"}),
        ("/v1/auth/login", {"email": nul, "password": "a long password"}),
        ("/v1/auth/password-reset", {"email": nul}),
        ("/v1/auth/verify-email", {"token": "x\u0000y"}),
        ("/v1/auth/refresh", {"refresh_token": "x\u0000y"}),
    ]:
        r = api.post(path, json=body)
        assert 400 <= r.status_code < 500 and r.json()["detail"].endswith("."), (path, r.text)
    user = api.new_user()
    r = api.post(
        "/v1/portraits", json={"likeness_id": str(uuid.uuid4()), "styles": ["x\u0000"]}, headers=user.auth
    )
    assert 400 <= r.status_code < 500 and r.json()["detail"].endswith("."), r.text


def test_sign_up_takes_only_addresses_our_mail_can_reach(api: Api) -> None:
    """A local part outside ASCII needs SMTPUTF8, which our mail path does not use: 422 in words.
    An internationalized domain is stored IDNA-encoded (ASCII), and logging in with either form works."""
    r = api.post("/v1/auth/signup", json={"email": "josé@exämple.com", "password": "a long password"})
    assert r.status_code == 422, r.text
    assert "we cannot send mail to this address" in r.json()["detail"]
    assert "Value error" not in r.json()["detail"]  # pydantic's prefix, words for developers
    # What was sent is not quoted back (email-validator's reason named the characters: 'é').
    for language in ("en", "ko"):
        r = api.post("/v1/auth/signup", json={"email": "ïü@example.com", "password": "a long password"},
                     headers={"Accept-Language": language})  # fmt: skip
        assert r.status_code == 422 and "ï" not in r.text and "ü" not in r.text, r.text
    assert "@ 앞부분에는 영문자" in r.json()["detail"], r.text
    local = f"jose-{uuid.uuid4().hex[:8]}"
    r = api.post("/v1/auth/signup", json={"email": f"{local}@exämple.com", "password": "a long password"})
    assert r.status_code == 202, r.text
    with session_scope() as session:
        assert session.scalar(select(func.count()).where(User.email == f"{local}@xn--exmple-cua.com")) == 1
    for form in ("exämple.com", "xn--exmple-cua.com"):
        r = api.post("/v1/auth/login", json={"email": f"{local}@{form}", "password": "a long password"})
        assert r.status_code == 200, r.text


def test_an_account_tried_with_too_many_wrong_passwords_waits_whoever_asks(api: Api) -> None:
    """AUTH_RATE_LIMIT counts per client address: clients at many addresses could guess one
    account's password without end. LOGIN_FAILURES_PER_ACCOUNT (10 in 15 minutes) counts the wrong
    passwords of the account, from anywhere; an address with no account is counted the same way,
    so the answer does not tell which addresses have one."""
    user = api.new_user()
    nobody = f"nobody-{uuid.uuid4().hex[:10]}@example.com"
    for email in (user.email, nobody):
        wrong = {"email": email, "password": "not the password"}
        assert [api.post("/v1/auth/login", json=wrong).status_code for _ in range(10)] == [401] * 10
        right = {"email": email, "password": user.password}
        r = api.post("/v1/auth/login", json=right)
        assert r.status_code == 429, r.text
        assert 850 <= int(r.headers["Retry-After"]) <= 900
        assert r.json()["detail"] == (
            "This account was tried with too many wrong passwords; please try again in 15 minutes, "
            "or reset your password."
        )
    r = api.post("/v1/auth/login", json=right, headers={"Accept-Language": "ko"})
    assert r.json()["detail"].startswith("이 계정에 틀린 비밀번호가 너무 많이 입력되었습니다. 15분 뒤에")
    other = api.new_user()  # another account, from the same client: signs in as ever
    assert (
        api.post("/v1/auth/login", json={"email": other.email, "password": other.password}).status_code == 200
    )
