"""Abuse: other users' objects, hostile files, metadata, and erasure that leaves nothing behind."""

import io
import struct
import time
import uuid
import zlib
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from PIL import Image
from sqlalchemy import func, select, text

from shared import storage
from shared.db import session_scope
from shared.localstack import free_port, wait_for_port
from shared.models import AuditEvent, Job, Likeness, Portrait, PosePhoto
from tests.conftest import Api, Processes, wait_until
from tests.pictures import astronaut, jpeg, png


def _png_header_claiming(width: int, height: int) -> bytes:
    """A tiny real PNG whose header claims width x height pixels."""
    raw = bytearray(png(Image.new("RGB", (8, 8))))
    ihdr = struct.pack(">II", width, height) + raw[24:29]
    raw[16:29] = ihdr
    raw[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(raw)


def _bomb() -> bytes:
    """A decompression bomb: 20000x20000 pixels of zeros in a few hundred kilobytes."""
    out = io.BytesIO()
    Image.new("1", (20000, 20000)).save(out, format="PNG", optimize=True)
    return out.getvalue()


HOSTILE = {
    "bomb.png": (_bomb, 400, "megapixels"),
    "huge-header.png": (lambda: _png_header_claiming(30000, 30000), 400, "30000x30000"),
    "truncated.jpg": (lambda: jpeg(astronaut())[:20000], 400, "damaged or incomplete"),
    "drawing.svg": (
        lambda: b'<svg xmlns="http://www.w3.org/2000/svg"><script>x</script></svg>',
        415,
        "not a JPEG, PNG, WebP or HEIC",
    ),
    "program.jpg": (lambda: b"MZ\x90\x00" + bytes(4000), 415, "not a JPEG, PNG, WebP or HEIC"),
    "big.jpg": (lambda: b"\xff\xd8\xff\xe0" + bytes(50 * 1024 * 1024), 413, "larger than 15 MB"),
}


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_file_gets_a_clear_4xx_and_nothing_is_stored(api: Api, name: str) -> None:
    make, status, words = HOSTILE[name]
    user = api.new_user()
    user_id = api.get("/v1/me", headers=user.auth).json()["id"]
    files = [
        ("files", ("good.jpg", jpeg(astronaut()), "image/jpeg")),
        ("files", (name, make(), "application/octet-stream")),
    ]
    r = api.post("/v1/photos", files=files, headers=user.auth)
    assert r.status_code == status, r.text
    assert words in r.json()["detail"] and name in r.json()["detail"]
    assert api.get("/v1/photos", headers=user.auth).json()["photos"] == []
    assert storage.list_keys(storage.user_prefix(user_id)) == []  # the good file was not kept either
    with session_scope() as session:
        assert (
            session.scalar(
                select(func.count())
                .select_from(Job)
                .where(Job.user_id == uuid.UUID(user_id), Job.kind == "photo_check")
            )
            == 0
        )


def test_type_is_judged_by_content_not_by_name(api: Api) -> None:
    user = api.new_user()
    r = api.post(
        "/v1/photos",
        headers=user.auth,
        files=[("files", ("really-a-png.jpg", png(astronaut()), "image/jpeg"))],
    )
    assert r.status_code == 201, r.text  # a real PNG named .jpg is a photo


def test_gps_and_all_metadata_are_gone_and_orientation_applied(api: Api) -> None:
    user = api.new_user()
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° when shown
    exif[0x8825] = {1: "N", 2: (37.0, 33.0, 59.0), 3: "E", 4: (126.0, 58.0, 41.0)}  # GPS
    exif[0x010F] = "PhoneMaker"
    img = astronaut().crop((0, 0, 1024, 800))
    raw = jpeg(img, exif=exif.tobytes())
    assert Image.open(io.BytesIO(raw)).getexif().get_ifd(0x8825)  # the upload does carry GPS
    photo = api.post(
        "/v1/photos", headers=user.auth, files=[("files", ("gps.jpg", raw, "image/jpeg"))]
    ).json()["photos"][0]
    stored = Image.open(io.BytesIO(api.get(photo["url"]).content))
    assert stored.size == (800, 1024)  # rotated as the phone meant it
    assert len(stored.getexif()) == 0 and "exif" not in stored.info
    assert (photo["width"], photo["height"]) == (800, 1024)


def _alices_objects(api: Api, alice) -> dict[str, str]:
    """One object of each kind for alice: a photo and its job (through the API), a ready likeness,
    a finished portrait job and its portrait, a ready pose photo (rows and objects, as the workers
    would leave them)."""
    up = api.post(
        "/v1/photos", headers=alice.auth, files=[("files", ("a.jpg", jpeg(astronaut()), "image/jpeg"))]
    ).json()
    user_id = uuid.UUID(api.get("/v1/me", headers=alice.auth).json()["id"])
    with session_scope() as session:
        likeness = Likeness(
            user_id=user_id,
            status="ready",
            class_word="person",
            trigger_word="ohwx",
            base_model="tiny",
            meta={"files": {"diffusers": storage.user_key(user_id, "likenesses", "x", "lora.safetensors")}},
        )
        job = Job(user_id=user_id, kind="generate_portraits", status="succeeded", input={})
        session.add_all([likeness, job])
        session.flush()
        key = storage.user_key(user_id, "portraits", f"{job.id}.png")
        storage.put_bytes(key, png(Image.new("RGB", (8, 8))), "image/png")
        portrait = Portrait(
            user_id=user_id,
            job_id=job.id,
            likeness_id=likeness.id,
            style="black-white",
            seed=1,
            object_key=key,
            width=8,
            height=8,
        )
        session.add(portrait)
        pose_key = storage.user_key(user_id, "poses", "pose.jpg")
        storage.put_bytes(pose_key, jpeg(astronaut()), "image/jpeg")
        pose = PosePhoto(
            user_id=user_id, object_key=pose_key, content_type="image/jpeg", width=512, height=512,
            size_bytes=1, sha256="0" * 64, status="ready", keypoints={"people": []},
        )  # fmt: skip
        session.add(pose)
        session.flush()
        return {
            "photo_id": up["photos"][0]["id"],
            "job_id": str(job.id),
            "likeness_id": str(likeness.id),
            "portrait_id": str(portrait.id),
            "pose_id": str(pose.id),
        }


# Ids of things every user shares (the style catalogue); any other id in a path must be one of
# `ids` below, or the sweep fails with a KeyError naming it: a new route cannot slip past.
PUBLIC_PATH_IDS = {"style_id"}


def _id_routes(api: Api, ids: dict[str, str]) -> list[tuple[str, str, dict, dict | None]]:
    """Every /v1 operation that takes an id (in its path, query or JSON body), filled with `ids`:
    (method, path, query, body). Read from the gateway's OpenAPI schema, so a new route is swept too."""
    schema = api.get("/openapi.json").json()
    calls = []
    for path, operations in schema["paths"].items():
        for method, op in operations.items():
            params = op.get("parameters", [])
            if any(p["in"] == "path" and p["name"] in PUBLIC_PATH_IDS for p in params):
                continue  # the same for everyone (a style's preview): nobody's object
            path_ids = {p["name"]: ids[p["name"]] for p in params if p["in"] == "path"}
            query = {p["name"]: ids[p["name"]] for p in params if p["in"] == "query" and p["name"] in ids}
            ref = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
            model = schema["components"]["schemas"].get(ref.get("$ref", "").rsplit("/", 1)[-1], {})
            body_ids = {name: ids[name] for name in model.get("properties", {}) if name in ids}
            if path_ids or query or body_ids:
                body = {"styles": ["black-white"], **body_ids} if body_ids else None
                calls.append((method.upper(), path.format(**path_ids), query, body))
    return calls


def test_every_id_of_another_user_is_not_found(api: Api) -> None:
    alice, bob = api.new_user(), api.new_user()
    ids = _alices_objects(api, alice)
    calls = _id_routes(api, ids)
    swept = {(method, path.split("/")[2]) for method, path, _, _ in calls}
    assert len(calls) >= 12 and {("GET", "portraits"), ("DELETE", "likenesses"), ("POST", "jobs")} <= swept
    for method, path, query, body in calls:
        r = api.request(method, path, params=query, json=body, headers=bob.auth)
        assert r.status_code == 404, (method, path, query, r.status_code, r.text)
        assert r.json()["detail"].endswith("not found."), r.text
    # The same ids are alice's, and nothing of hers was touched.
    mine = api.get("/v1/portraits", params={"job_id": ids["job_id"]}, headers=alice.auth).json()
    assert [p["id"] for p in mine["portraits"]] == [ids["portrait_id"]]
    zipped = api.get("/v1/portraits/zip", params={"job_id": ids["job_id"]}, headers=alice.auth)
    assert zipped.status_code == 200
    assert api.get(f"/v1/likenesses/{ids['likeness_id']}", headers=alice.auth).status_code == 200
    photo_id = ids["photo_id"]
    assert api.get("/v1/photos", headers=bob.auth).json()["photos"] == []
    assert api.get(f"/v1/photos/{photo_id}", headers=alice.auth).status_code == 200
    assert api.get("/v1/photos", headers={"Authorization": "Bearer forged"}).status_code == 401


def test_delete_a_photo_removes_its_object(api: Api) -> None:
    user = api.new_user()
    up = api.post(
        "/v1/photos", headers=user.auth, files=[("files", ("a.jpg", jpeg(astronaut()), "image/jpeg"))]
    ).json()
    api.wait_job(up["job"]["id"], user)
    user_id = api.get("/v1/me", headers=user.auth).json()["id"]
    assert api.delete(f"/v1/photos/{up['photos'][0]['id']}", headers=user.auth).status_code == 204
    assert storage.list_keys(storage.user_prefix(user_id)) == []
    assert api.get(f"/v1/photos/{up['photos'][0]['id']}", headers=user.auth).status_code == 404


def test_erasure_leaves_no_row_and_no_object(api: Api) -> None:
    user = api.new_user()
    user_id = api.get("/v1/me", headers=user.auth).json()["id"]
    up = api.post(
        "/v1/photos",
        headers=user.auth,
        files=[("files", (f"{i}.jpg", jpeg(astronaut()), "image/jpeg")) for i in range(3)],
    )
    api.wait_job(up.json()["job"]["id"], user)
    assert len(storage.list_keys(storage.user_prefix(user_id))) == 3

    first = api.delete("/v1/me", headers=user.auth)
    assert first.status_code == 202
    assert api.get("/v1/photos", headers=user.auth).status_code == 401  # the account is closed at once
    me = api.get("/v1/me", headers=user.auth)  # only its pending erasure can be read, until it is done
    assert (me.status_code == 200 and me.json()["erasing_since"]) or me.status_code == 401, me.text
    login = api.post("/v1/auth/login", json={"email": user.email, "password": user.password})
    assert login.status_code in (401, 403), login.text  # 403: "This account is being erased ..."

    def gone() -> bool:
        with session_scope() as session:
            rows = session.execute(
                text(
                    "SELECT (SELECT count(*) FROM users WHERE id = :u) + (SELECT count(*) FROM photos "
                    "WHERE user_id = :u) + (SELECT count(*) FROM jobs WHERE user_id = :u) + "
                    "(SELECT count(*) FROM refresh_tokens WHERE user_id = :u)"
                ),
                {"u": user_id},
            ).scalar()
        return rows == 0

    wait_until(gone, timeout=60, what="every row of the user to be deleted")
    assert storage.list_keys(storage.user_prefix(user_id)) == []
    with session_scope() as session:
        audit = session.scalars(select(AuditEvent).where(AuditEvent.action == "user_erased")).all()
        assert audit and all(user.email not in str(a.detail) and user_id not in str(a.detail) for a in audit)
        dump = session.execute(
            text("SELECT count(*) FROM jobs WHERE input::text LIKE :u"), {"u": f"%{user_id}%"}
        ).scalar()
        assert dump == 0


def test_the_job_list_holds_only_the_callers_jobs(api: Api) -> None:
    alice, bob = api.new_user(), api.new_user()
    _alices_objects(api, alice)  # a photo check and a finished portrait job of hers
    photo = [("files", ("b.jpg", jpeg(astronaut()), "image/jpeg"))]
    assert api.post("/v1/photos", headers=bob.auth, files=photo).status_code == 201

    def listed(user, **params: str) -> set[str]:  # noqa: ANN001
        return {j["id"] for j in api.get("/v1/jobs", params=params, headers=user.auth).json()["jobs"]}

    def rows(user, **where: str) -> set[str]:  # noqa: ANN001
        user_id = uuid.UUID(api.get("/v1/me", headers=user.auth).json()["id"])
        with session_scope() as session:
            query = select(Job.id).where(
                Job.user_id == user_id, *(getattr(Job, k) == v for k, v in where.items())
            )
            return {str(i) for i in session.scalars(query)}

    def compared(user, **params: str) -> tuple[set[str], set[str]]:  # noqa: ANN001
        # Workers still run the photo checks and mail jobs: compare with the rows read before and
        # after the request, and read again when a job changed meanwhile.
        for _ in range(20):
            before, got, after = rows(user, **params), listed(user, **params), rows(user, **params)
            if before == after:
                return got, before
            time.sleep(0.25)
        raise AssertionError(f"the jobs of {params} kept changing for 5 s")

    for params in ({}, {"kind": "generate_portraits"}, {"kind": "photo_check"}, {"status": "succeeded"}):
        for user in (alice, bob):
            got, want = compared(user, **params)
            assert got == want, params
    assert rows(alice, kind="generate_portraits") and not listed(bob, kind="generate_portraits")


def test_portraits_are_listed_best_likeness_first(api: Api) -> None:
    user = api.new_user()
    user_id = uuid.UUID(api.get("/v1/me", headers=user.auth).json()["id"])
    scores = [0.31, None, 0.92, 0.64, 0.05]  # made in this order
    with session_scope() as session:
        job = Job(user_id=user_id, kind="generate_portraits", status="succeeded", input={})
        session.add(job)
        session.flush()
        for seed, score in enumerate(scores):
            key = storage.user_key(user_id, "portraits", f"{job.id}-{seed}.png")
            session.add(
                Portrait(user_id=user_id, job_id=job.id, style="black-white", seed=seed, object_key=key,
                         width=8, height=8, identity_score=score)
            )  # fmt: skip
            session.flush()
        job_id = str(job.id)
    listed = api.get("/v1/portraits", params={"job_id": job_id}, headers=user.auth).json()["portraits"]
    assert [p["identity_score"] for p in listed] == [0.92, 0.64, 0.31, 0.05, None]
    everything = api.get("/v1/portraits", headers=user.auth).json()["portraits"]
    assert [p["identity_score"] for p in everything] == [0.92, 0.64, 0.31, 0.05, None]


def test_presigned_links_last_minutes_not_days(api: Api) -> None:
    """Links to photos and portraits are bearer credentials for biometric data: they expire after
    PRESIGN_SECONDS (300 s), and they work until then."""
    user = api.new_user()
    api.post("/v1/photos", headers=user.auth, files=[("files", ("a.jpg", jpeg(astronaut()), "image/jpeg"))])
    ids = _alices_objects(api, user)
    links = [
        api.get("/v1/photos", headers=user.auth).json()["photos"][0]["url"],
        api.get(f"/v1/photos/{ids['photo_id']}", headers=user.auth).json()["url"],
        api.get("/v1/portraits", headers=user.auth).json()["portraits"][0]["url"],
        api.get(f"/v1/poses/{ids['pose_id']}", headers=user.auth).json()["url"],
    ]
    for link in links:
        query = dict(parse_qsl(urlsplit(link).query))
        assert query["X-Amz-Expires"] == "300", link
        assert httpx.get(link, timeout=10).status_code == 200, link


def test_uploads_meet_the_configured_pixel_limit(stack, procs) -> None:  # noqa: ANN001
    """The routes pass UPLOAD_MAX_PIXELS to the decoder (the decoder's own tests use a constant):
    a gateway configured for 1 MP refuses 1.2 MP photos and pose photos and takes 0.9 MP ones."""
    port = free_port()
    procs.start("gateway-1mp", "gateway", "--port", str(port), env={"UPLOAD_MAX_PIXELS": "1000000"})
    wait_for_port(port, timeout=60)
    big, fits = astronaut().resize((1200, 1000)), astronaut().resize((1000, 900))
    with Api(base_url=f"http://127.0.0.1:{port}", timeout=60) as api:
        user = api.new_user()
        for path, field in [("/v1/photos", "files"), ("/v1/poses", "file")]:
            r = api.post(path, files={field: ("big.png", png(big), "image/png")}, headers=user.auth)
            assert (r.status_code, r.json()) == (
                400,
                {"detail": "big.png is 1200x1000 pixels; the limit is 1 megapixels."},
            ), path
            r = api.post(path, files={field: ("fits.png", png(fits), "image/png")}, headers=user.auth)
            assert r.status_code == 201, (path, r.text)


def test_the_same_photo_in_parallel_uploads_counts_once(api: Api) -> None:
    """Each upload checked for duplicates among the photos stored before it: 8 uploads of one JPEG at
    once stored 7 as new photos (the training count then disagreed with the list)."""
    from concurrent.futures import ThreadPoolExecutor

    user = api.new_user()
    photo = jpeg(astronaut())

    def upload(_: int) -> httpx.Response:
        return api.post("/v1/photos", headers=user.auth, files=[("files", ("me.jpg", photo, "image/jpeg"))])

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(upload, range(8)))
    assert all(r.status_code == 201 for r in answers), [r.text for r in answers if r.status_code != 201]
    reasons = [r.json()["photos"][0]["reason_code"] for r in answers]
    assert sorted(reasons, key=str) == [None] + ["duplicate"] * 7, reasons


def test_one_address_receives_a_bounded_number_of_account_mails(api: Api) -> None:
    """Password resets and sign-ups in someone's name, each from another client address, mailed
    every time: the per-client limit let anyone flood an inbox. Now ACCOUNT_MAIL_RATE_LIMIT (5 an
    hour) bounds them per address, and the answers do not change (they must not tell the limit)."""
    user = api.new_user()
    answers = []
    for n in range(6):
        client = {"X-Forwarded-For": f"203.0.113.{n}"}
        answers.append(api.post("/v1/auth/password-reset", json={"email": user.email}, headers=client))
        body = {"email": user.email, "password": "another long password"}
        answers.append(api.post("/v1/auth/signup", json=body, headers=client))
    for same_route in (answers[0::2], answers[1::2]):
        first = same_route[0].json()["detail"]
        assert {(r.status_code, r.json()["detail"]) for r in same_route} == {(202, first)}
    user_id = uuid.UUID(api.get("/v1/me", headers=user.auth).json()["id"])
    with session_scope() as session:
        mails = session.scalars(select(Job).where(Job.user_id == user_id, Job.kind == "send_email")).all()
        templates = sorted(m.input["template"] for m in mails if m.input["template"] != "verify_email")
    # a budget per kind: the sign-ups in her name did not use up her password resets
    assert templates == ["reset_password"] * 5 + ["signup_existing"] * 5, templates


def test_an_upload_waiting_too_long_for_another_hears_409_and_when_to_retry(api: Api) -> None:
    """Uploads of one user take turns; one that waits past DATABASE_LOCK_TIMEOUT_MS (another still
    storing large photos) is told so, not "the database is not answering" (a lock timeout is an
    OperationalError, the outage's 503)."""
    from services.gateway.uploads import UPLOAD_LOCK_CLASS

    user = api.new_user()
    user_id = uuid.UUID(api.get("/v1/me", headers=user.auth).json()["id"])
    files = [("files", ("me.jpg", jpeg(astronaut()), "image/jpeg"))]
    with session_scope() as other_upload:  # holds the user's upload lock, as a slow upload does
        other_upload.execute(select(func.pg_advisory_xact_lock(UPLOAD_LOCK_CLASS, user_id.int & 0x7FFFFFFF)))
        r = api.post("/v1/photos", headers=user.auth, files=files)
    assert r.status_code == 409 and r.headers["Retry-After"] == "1", r.text
    wanted = "Another upload of yours is still being stored; send this one again in a moment."
    assert r.json()["detail"] == wanted
    assert api.post("/v1/photos", headers=user.auth, files=files).status_code == 201
    assert len(api.get("/v1/photos", headers=user.auth).json()["photos"]) == 1  # the refused one left nothing


def test_a_lock_held_too_long_is_busy_not_a_database_outage(api: Api) -> None:
    """A request whose row lock waits past DATABASE_LOCK_TIMEOUT_MS (another writer of the same set
    still at work) heard "The database is not answering; try again in a minute." (Retry-After 60)."""
    user = api.new_user()
    files = [("files", ("a.jpg", jpeg(astronaut()), "image/jpeg"))]
    photo_id = api.post("/v1/photos", headers=user.auth, files=files).json()["photos"][0]["id"]
    user_id = uuid.UUID(api.get("/v1/me", headers=user.auth).json()["id"])
    with session_scope() as writer:  # the user's photo set, locked as a photo check locks it
        writer.execute(text("SELECT id FROM users WHERE id = :id FOR UPDATE"), {"id": user_id})
        r = api.delete(f"/v1/photos/{photo_id}", headers=user.auth)
    assert r.status_code == 503 and r.headers["Retry-After"] == "5", r.text
    assert r.json()["detail"] == "The service is busy right now; try again in a few seconds."
    assert api.delete(f"/v1/photos/{photo_id}", headers=user.auth).status_code == 204


@pytest.mark.parametrize("proxy", [None, "127.0.0.1"])
def test_a_client_cannot_pick_its_address_to_dodge_the_login_limit(procs: Processes, proxy: str | None):
    """Without a proxy named in FORWARDED_ALLOW_IPS (`make run`, one host), X-Forwarded-For is
    ignored: uvicorn trusts it from 127.0.0.1 by default, so any local client could name a fresh
    address per login try and never meet the limit. With one named (the ingress pods in k8s), the
    header it sends picks the client, as it must behind a proxy."""
    port = free_port()
    # 4, not test_accounts' 3: the counters live in the suite's one Redis, keyed by the limit
    env = {"AUTH_RATE_LIMIT": "4/minute", "HEALTH_PORT": str(free_port())}
    if proxy:
        env["FORWARDED_ALLOW_IPS"] = proxy
    procs.start("gateway-login-limit", "gateway", "--port", str(port), env=env)
    wait_for_port(port, timeout=60)
    with Api(base_url=f"http://127.0.0.1:{port}", timeout=30) as gateway:
        # an address of its own: the per-account limit of wrong passwords counts in the suite's Redis
        wrong = {"email": f"nobody-{uuid.uuid4().hex[:10]}@example.com", "password": "not the password"}
        clients = [{"X-Forwarded-For": f"198.51.100.{n}"} for n in range(5)]
        statuses = [gateway.post("/v1/auth/login", json=wrong, headers=h).status_code for h in clients]
    expected = [401] * 5 if proxy else [401] * 4 + [429]
    assert statuses == expected
