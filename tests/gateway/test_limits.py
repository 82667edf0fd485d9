"""Idempotency keys belong to one user and hold under concurrent identical requests; the limits of
the API: running portrait jobs, the daily portrait quota (counting earlier jobs), files per upload,
and the upload rate limit."""

import threading
import time
import uuid

import httpx
from sqlalchemy import func, select, text

from shared import storage
from shared.db import session_scope
from shared.jobs.outbox import idempotency_lock_name
from shared.models import Likeness, Photo, Portrait
from tests.conftest import Api, Platform, UserSession
from tests.pictures import astronaut_variants, jpeg


def _files(n: int, start: int = 0) -> list[tuple[str, tuple[str, bytes, str]]]:
    images = astronaut_variants(start + n)[start:]
    return [("files", (f"me{i}.jpg", jpeg(img), "image/jpeg")) for i, img in enumerate(images)]


def _uid(api: Api, user: UserSession) -> uuid.UUID:
    return uuid.UUID(api.get("/v1/me", headers=user.auth).json()["id"])


def _photo_rows(uid: uuid.UUID) -> int:
    with session_scope() as session:
        return session.scalar(select(func.count(Photo.id)).where(Photo.user_id == uid))


def test_an_idempotency_key_belongs_to_one_user(api: Api) -> None:
    alice, bob = api.new_user(), api.new_user()
    files, key = _files(2), {"Idempotency-Key": "my-upload"}
    first = api.post("/v1/photos", files=files, headers={**alice.auth, **key})
    theirs = api.post("/v1/photos", files=files, headers={**bob.auth, **key})
    assert first.status_code == theirs.status_code == 201, theirs.text
    assert theirs.json()["job"]["id"] != first.json()["job"]["id"]  # his own job, not hers
    bob_photos = {p["id"] for p in api.get("/v1/photos", headers=bob.auth).json()["photos"]}
    assert bob_photos == {p["id"] for p in theirs.json()["photos"]}
    assert not bob_photos & {p["id"] for p in first.json()["photos"]}
    assert api.get(f"/v1/jobs/{first.json()['job']['id']}", headers=bob.auth).status_code == 404
    for user in (alice, bob):
        assert len(storage.list_keys(storage.user_prefix(_uid(api, user)))) == 2


def test_concurrent_identical_requests_make_one_job(api: Api, platform: Platform) -> None:
    user = api.new_user()
    files, n = _files(2), 4
    start, answers = threading.Barrier(n), [None] * n

    def send(i: int) -> None:
        with httpx.Client(base_url=platform.url, timeout=60) as client:
            start.wait()
            answers[i] = client.post(
                "/v1/photos", files=files, headers={**user.auth, "Idempotency-Key": "double-click"}
            )

    threads = [threading.Thread(target=send, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status_code for r in answers] == [201] * n, [r.text for r in answers]
    assert len({r.json()["job"]["id"] for r in answers}) == 1
    assert len({tuple(p["id"] for p in r.json()["photos"]) for r in answers}) == 1
    uid = _uid(api, user)
    assert _photo_rows(uid) == 2 and len(storage.list_keys(storage.user_prefix(uid))) == 2


def test_a_retry_while_the_first_still_holds_the_key_gets_a_fast_409_and_others_are_served(
    api: Api, platform: Platform
) -> None:
    """The old gateway waited for the key's lock until its 2 s read timeout took the wait for a hung
    database: the retry got a false 503 "The database is not answering", and the pool it dropped made
    every other request of that process 503 for the next 2 s."""
    user, others = api.new_user(), [api.new_user() for _ in range(3)]
    uid, key, files = _uid(api, user), "held-by-the-first", _files(1)
    statuses: list[int] = []
    stop = threading.Event()

    def another_user(other: UserSession) -> None:
        with httpx.Client(base_url=platform.url, timeout=30) as client:
            while not stop.is_set():
                statuses.append(client.get("/v1/me", headers=other.auth).status_code)

    threads = [threading.Thread(target=another_user, args=(o,)) for o in others]
    with session_scope() as first:  # the first attempt, still in flight (storage slow), holds the key
        first.execute(
            text("SELECT pg_advisory_xact_lock(hashtextextended(:lock, 0))"),
            {"lock": idempotency_lock_name(uid, key)},
        )
        for t in threads:
            t.start()
        started = time.monotonic()
        retry = api.post("/v1/photos", files=files, headers={**user.auth, "Idempotency-Key": key})
        took = time.monotonic() - started
        time.sleep(2.5)  # the others go on meanwhile (the old pool stayed dropped for 2 s)
        stop.set()
        for t in threads:
            t.join()
    assert retry.status_code == 409, retry.text
    assert retry.json() == {
        "detail": "A request with this Idempotency-Key is still in progress; try again shortly."
    }
    assert retry.headers["Retry-After"] == "1"
    assert took < 1.8, f"answered after {took:.2f} s"
    assert len(statuses) > 10 and set(statuses) == {200}, sorted(set(statuses))
    assert _photo_rows(uid) == 0  # the refused retry stored nothing
    # The first attempt done (here: it gave the key up), the retry is served.
    again = api.post("/v1/photos", files=files, headers={**user.auth, "Idempotency-Key": key})
    assert again.status_code == 201, again.text


def _ready_likeness(uid: uuid.UUID) -> uuid.UUID:
    """A ready likeness row (no worker runs in these tests: the jobs stay queued)."""
    with session_scope() as session:
        likeness = Likeness(user_id=uid, status="ready", class_word="woman", trigger_word="zuvek",
                            base_model="tiny", photo_ids=[])  # fmt: skip
        session.add(likeness)
        session.flush()
        return likeness.id


def _cancel_all(api: Api, user: UserSession, jobs: list[str]) -> None:
    """Leave nothing for a later test's generate worker."""
    for job_id in jobs:
        api.post(f"/v1/jobs/{job_id}/cancel", headers=user.auth)


def test_running_jobs_limit_is_409(api: Api) -> None:
    user = api.new_user()
    body = {"likeness_id": str(_ready_likeness(_uid(api, user))), "styles": ["black-white"], "count": 1}
    started = []
    try:
        for _ in range(2):  # MAX_RUNNING_JOBS_PER_USER
            r = api.post("/v1/portraits", json=body, headers=user.auth)
            assert r.status_code == 202, r.text
            started.append(r.json()["job"]["id"])
        third = api.post("/v1/portraits", json=body, headers=user.auth)
        assert third.status_code == 409
        assert (
            third.json()["detail"] == "You already have 2 portrait jobs under way; wait until one finishes."
        )
        _cancel_all(api, user, started[:1])
        again = api.post("/v1/portraits", json=body, headers=user.auth)
        assert again.status_code == 202, again.text  # one finished: room again
        started.append(again.json()["job"]["id"])
    finally:
        _cancel_all(api, user, started)


def test_daily_quota_counts_earlier_jobs_and_is_429(api: Api) -> None:
    user = api.new_user()
    uid = _uid(api, user)
    likeness_id = _ready_likeness(uid)
    with session_scope() as session:  # 199 portraits made earlier today (MAX_PORTRAITS_PER_DAY 200)
        session.add_all(
            Portrait(
                user_id=uid,
                likeness_id=likeness_id,
                style="black-white",
                seed=i,
                object_key=f"users/{uid}/portraits/x/{i}.png",
                width=64,
                height=96,
            )  # fmt: skip
            for i in range(199)
        )
    body = {"likeness_id": str(likeness_id), "styles": ["black-white", "soft-beauty"], "count": 1}
    r = api.post("/v1/portraits", json=body, headers=user.auth)
    assert r.status_code == 429
    assert r.json()["detail"] == "You can make 200 portraits a day; 1 are left today."
    one = api.post("/v1/portraits", json={**body, "styles": ["black-white"]}, headers=user.auth)
    assert one.status_code == 202, one.text
    _cancel_all(api, user, [one.json()["job"]["id"]])


def test_more_than_20_files_is_refused_and_nothing_stored(api: Api) -> None:
    user = api.new_user()
    photo = _files(1)[0][1]
    r = api.post("/v1/photos", files=[("files", photo)] * 21, headers=user.auth)
    assert r.status_code == 400 and r.json()["detail"] == "Send between 1 and 20 photos at once."
    uid = _uid(api, user)
    assert _photo_rows(uid) == 0 and storage.list_keys(storage.user_prefix(uid)) == []


def test_a_form_without_photos_in_the_field_says_so_and_stores_nothing(api: Api) -> None:
    """Another field's name, a text field, a form cut off before its end: each said "Send between 1
    and 20 photos at once", true of none of them (a newcomer's finding)."""
    user = api.new_user()
    photo = _files(1)[0][1]
    wanted = (
        "No photo arrived in the form field files: send 1 to 20 photos there, in a complete "
        "multipart/form-data form."
    )
    cut = (
        b'--B\r\nContent-Disposition: form-data; name="files"; filename="a.jpg"\r\n'
        b"Content-Type: image/jpeg\r\n\r\nab"
    )
    attempts = [
        {"files": [("file", photo)]},
        {"files": [("files", (None, "just text"))]},
        {"content": cut, "headers": {"content-type": "multipart/form-data; boundary=B"}},
    ]
    for kwargs in attempts:
        headers = {**user.auth, **kwargs.pop("headers", {})}
        r = api.post("/v1/photos", headers=headers, **kwargs)
        assert r.status_code == 400, r.text
        assert r.json()["detail"] == wanted
    uid = _uid(api, user)
    assert _photo_rows(uid) == 0 and storage.list_keys(storage.user_prefix(uid)) == []


def test_uploads_are_rate_limited_per_user(platform: Platform, procs) -> None:
    from shared.localstack import free_port, wait_for_port

    port = free_port()
    procs.start("gateway-uploads", "gateway", "--port", str(port), env={"UPLOAD_RATE_LIMIT": "2/minute"})
    wait_for_port(port, timeout=60)
    with Api(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        alice, bob = client.new_user(), client.new_user()
        codes = [client.post("/v1/photos", files=_files(1), headers=alice.auth).status_code for _ in range(3)]
        assert codes == [201, 201, 429]
        refused = client.post("/v1/photos", files=_files(1), headers=alice.auth)
        assert "Too many requests" in refused.json()["detail"] and refused.headers["Retry-After"]
        assert (
            client.post("/v1/photos", files=_files(1), headers=bob.auth).status_code == 201
        )  # his own budget
        assert _photo_rows(_uid(client, alice)) == 2


def test_a_user_keeps_a_bounded_number_of_photos(api: Api) -> None:
    """Every upload is stored (a re-sent photo too, as a rejected duplicate), so re-sending the
    same picture in a loop grew a user's storage without bound: PHOTOS_PER_USER_MAX (100) photo rows,
    then 409 with a sentence that says what to do, and nothing stored."""
    user = api.new_user()
    uid = _uid(api, user)
    with session_scope() as session:  # 98 rows already (no objects needed: only rows are counted)
        for _ in range(98):
            pid = uuid.uuid4()
            session.add(
                Photo(id=pid, user_id=uid, object_key=storage.user_key(uid, "photos", f"{pid}.jpg"),
                      content_type="image/jpeg", width=512, height=512, size_bytes=1, sha256=pid.hex * 2)
            )  # fmt: skip
    over = api.post("/v1/photos", files=_files(3), headers=user.auth)
    assert over.status_code == 409, over.text
    assert over.json()["detail"] == (
        "You have 98 photos and can keep at most 100; delete some (rejected ones first) "
        "before uploading 3 more."
    )
    assert _photo_rows(uid) == 98
    assert len(storage.list_keys(storage.user_prefix(uid))) == 0
    assert api.post("/v1/photos", files=_files(2), headers=user.auth).status_code == 201
    assert _photo_rows(uid) == 100
