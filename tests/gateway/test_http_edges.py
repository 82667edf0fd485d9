"""The gateway at the edges of HTTP, over real sockets: HEAD on pages and probes, request bodies that are
too large (by Content-Length or chunked) or that never arrive."""

import http.client
import json
import socket
import threading
import time
import uuid

import httpx

from shared.contracts import TrainLikeness
from shared.db import session_scope
from shared.jobs import enqueue
from shared.localstack import free_port, wait_for_port
from tests.conftest import Api, Platform, Processes
from tests.pictures import astronaut, png

LIMIT = 64 * 1024  # the default json_body_max_bytes
TOO_LARGE = {"detail": "The request body is larger than the 64 KiB this API accepts."}


def _exchange(
    port: int, head: str, parts: list[bytes] = (), pause: float = 0.0, timeout: float = 10.0
) -> tuple[int, dict[str, str], bytes, float]:
    """Send `head` (request line and headers) and `parts` over one socket, `pause` s apart; read the
    answer: (status, headers, body, seconds from the headers sent to the answer read)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        started = time.monotonic()
        sock.sendall(head.replace("\n", "\r\n").encode() + b"\r\n")
        for part in parts:
            time.sleep(pause)
            sock.sendall(part)
        response = http.client.HTTPResponse(sock)
        response.begin()
        body = response.read()
        return response.status, dict(response.getheaders()), body, time.monotonic() - started


def _post(path: str, *headers: str) -> str:
    return "\n".join([f"POST {path} HTTP/1.1", "Host: 127.0.0.1", *headers]) + "\n"


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def test_head_answers_like_get_without_a_body(api: Api, platform: Platform) -> None:
    for path in ("/", "/healthz", "/readyz", "/v1/system"):
        get, head = api.get(path), api.head(path)
        assert (head.status_code, get.status_code) == (200, 200), (path, head.status_code)
        assert head.content == b"", path
        for header in ("content-type", "content-length"):
            assert head.headers[header] == get.headers[header], (path, header)
    user = api.new_user()
    for path in ("/v1/me", "/v1/jobs", "/v1/styles", "/v1/photos"):  # every route that takes GET
        get, head = api.get(path, headers=user.auth), api.head(path, headers=user.auth)
        assert (head.status_code, get.status_code) == (200, 200), (path, head.status_code)
        assert head.content == b"" and head.headers["content-type"] == get.headers["content-type"], path
    assert api.head("/v1/me").status_code == 401  # the same checks as GET
    r = api.head("/v1/auth/login")  # POST only: 405, and Allow says so
    assert r.status_code == 405 and r.headers["allow"] == "POST" and r.content == b""
    for path in ("/healthz", "/readyz", "/metrics"):  # the health port (Prometheus, probes)
        head = httpx.head(f"{platform.health_url}{path}", timeout=10)
        assert head.status_code == 200 and head.content == b"", path
        assert int(head.headers["content-length"]) > 0, path


def test_405_names_every_method_the_address_takes(api: Api) -> None:
    """/v1/me is three routes (GET, PATCH, DELETE): a PUT must hear about all of them (RFC 9110
    §15.5.6), in words and in `Allow`, not only the first route's GET."""
    user = api.new_user(consent=False)
    r = api.put("/v1/me", json={}, headers=user.auth)
    assert r.status_code == 405
    assert r.headers["allow"] == "DELETE, GET, PATCH"
    assert r.json()["detail"] == "This address does not take PUT requests; it takes DELETE, GET, PATCH."
    r = api.put("/v1/me", headers={**user.auth, "Accept-Language": "ko"})
    assert r.headers["allow"] == "DELETE, GET, PATCH" and "DELETE, GET, PATCH" in r.json()["detail"]


def test_a_body_that_is_not_json_hears_what_to_send(api: Api) -> None:
    """Bodies FastAPI cannot decode (not UTF-8, nested 20,000 deep) got "The request could not be
    answered (400)", and a JSON object sent as text/plain "Input should be a valid dictionary"."""
    as_json = {"content-type": "application/json"}
    unreadable = (
        b'{"email":"\xff\xfe@example.com","password":"correct horse battery"}',
        b"[" * 20000 + b"]" * 20000,
    )
    for body in unreadable:
        r = api.post("/v1/auth/signup", content=body, headers=as_json)
        assert r.status_code == 400, r.text
        assert "send JSON as UTF-8 text with Content-Type: application/json" in r.json()["detail"]
    r = api.post("/v1/auth/signup", content=unreadable[0], headers={**as_json, "Accept-Language": "ko"})
    assert r.status_code == 400 and "UTF-8" in r.json()["detail"] and "요청 본문" in r.json()["detail"]
    body = b'{"email":"someone@example.com","password":"correct horse battery"}'
    for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
        headers = {"content-type": content_type} if content_type else {}
        r = api.post("/v1/auth/signup", content=body, headers=headers)
        assert r.status_code == 422, r.text
        assert (
            r.json()["detail"]
            == "Send the request body as JSON, with the header Content-Type: application/json."
        )


def test_422_sentences_neither_quote_the_value_nor_speak_python(api: Api) -> None:
    """email-validator's reasons quoted pieces of the address ("found `;` at 5"); a Literal[True]
    field said "Input should be True" (JSON writes `true`), in Korean too."""
    r = api.post("/v1/auth/signup", json={"email": "zqx;w@example..com", "password": "correct horse battery"})
    assert r.status_code == 422
    assert r.json()["detail"] == "Please check this field: email (value is not a valid email address)."
    assert "zqx" not in r.text and "`" not in r.text
    user = api.new_user(consent=False)
    for language, wanted in (("en", "accept (must be true, without quotes"), ("ko", "따옴표 없이 true여야")):
        headers = {**user.auth, "Accept-Language": language}
        r = api.post("/v1/me/consent", json={"accept": False}, headers=headers)
        assert r.status_code == 422 and wanted in r.json()["detail"], r.text
        assert "True" not in r.json()["detail"]
    # Nor does the list under `errors`: pydantic's own msg of a UUID quoted a character sent.
    body = {"likeness_id": "zzzzzzzz-SECRET", "styles": ["black-white"]}
    r = api.post("/v1/portraits", json=body, headers=api.new_user().auth)
    assert r.status_code == 422 and "`z`" not in r.text and "SECRET" not in r.text, r.text
    assert r.json()["errors"][0]["msg"] == "must be an ID like 123e4567-e89b-42d3-a456-426614174000"
    r = api.post("/v1/auth/login", json={"email": user.email})  # pydantic: "Field required"
    assert r.json()["detail"] == "Please check this field: password (is missing).", r.text
    r = api.get("/v1/jobs?limit=abc", headers=user.auth)  # a query parameter: as a body's number
    assert (
        r.json()["detail"]
        == "Please check this field: query parameter limit (must be a whole number like 2)."
    ), r.text


def test_a_field_the_request_does_not_have_is_named_not_ignored(api: Api) -> None:
    """A typo (`local` for `locale`) was dropped and the answer said 200, the account unchanged."""
    user = api.new_user()
    r = api.patch("/v1/me", json={"local": "ko"}, headers=user.auth)
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == "Please check this field: local (not a field of this request)."
    assert api.get("/v1/me", headers=user.auth).json()["locale"] == "en"
    r = api.patch("/v1/me", json={"local": "ko"}, headers={**user.auth, "Accept-Language": "ko"})
    assert r.status_code == 422 and "local(받지 않는 항목입니다)" in r.json()["detail"], r.text
    body = {"likeness_id": str(uuid.uuid4()), "styles": ["black-white"], "count": 2, "seed": 7}
    r = api.post("/v1/portraits", json=body, headers=user.auth)  # `seed` is not public
    assert r.status_code == 422 and "seed (not a field of this request)" in r.json()["detail"], r.text
    r = api.patch("/v1/me", json={"locale": "ko", "email_results": False}, headers=user.auth)
    assert r.status_code == 200 and r.json()["locale"] == "ko" and r.json()["email_results"] is False


def test_a_long_name_sent_is_echoed_clipped(api: Api) -> None:
    """A 3000-character unknown field came back whole in `detail` and in `errors[].loc` (a 6 KB
    422); an upload's 3000-character file name whole in the 415 of both upload routes."""
    user = api.new_user()
    key = "k" * 3000
    clipped = "k" * 64 + "…"
    r = api.patch("/v1/me", json={key: 1}, headers=user.auth)
    assert r.status_code == 422, r.text
    assert r.json() == {
        "detail": f"Please check this field: {clipped} (not a field of this request).",
        "errors": [
            {"loc": ["body", clipped], "msg": "not a field of this request", "type": "extra_forbidden"}
        ],
    }
    name = "n" * 3000 + ".jpg"
    for path, field in [("/v1/photos", "files"), ("/v1/poses", "file")]:
        r = api.post(path, files=[(field, (name, b"not a picture", "image/jpeg"))], headers=user.auth)
        assert r.status_code == 415, r.text
        assert r.json() == {"detail": "n" * 64 + "… is not a JPEG, PNG, WebP or HEIC photo."}, path


def test_a_422_names_at_most_ten_errors_and_counts_the_rest(api: Api) -> None:
    """A 64 KiB body of 3000 unknown keys made a 422 about 15 times its size (one error each)."""
    user = api.new_user()
    body = {f"k{i:04d}": 1 for i in range(3000)}
    for lang, gap, more in (("en", " ", ", and 2990 more"), ("ko", "", " 외 2990개")):
        r = api.patch(f"/v1/me?lang={lang}", json=body, headers=user.auth)
        assert r.status_code == 422, r.text
        assert len(r.json()["errors"]) == 10 and r.json()["errors"][0]["loc"] == ["body", "k0000"]
        assert r.json()["detail"].endswith(f"k0009{gap}({r.json()['errors'][9]['msg']}){more}."), r.text
        assert len(r.content) < 3_000, len(r.content)  # was 180 KB


def test_json_body_over_the_limit_is_refused_before_it_is_read(api: Api, platform: Platform) -> None:
    port = _port(platform.url)
    # Content-Length says 100 MB: 413 at once, after 1 KB of it (the old gateway waited for it all).
    status, headers, body, _ = _exchange(
        port,
        _post("/v1/auth/signup", "Content-Type: application/json", "Content-Length: 100000000"),
        [b"{" + b" " * 1000],
    )
    assert (status, json.loads(body)) == (413, TOO_LARGE)
    assert headers["connection"] == "close"
    # Chunked, no Content-Length: refused once the chunks pass the limit, before the body ends.
    chunk = b"%x\r\n%s\r\n" % (16 * 1024, b" " * 16 * 1024)
    status, _, body, _ = _exchange(
        port,
        _post("/v1/auth/signup", "Content-Type: application/json", "Transfer-Encoding: chunked"),
        [chunk] * 5,
    )
    assert (status, json.loads(body)) == (413, TOO_LARGE)
    # Files sent as multipart to a JSON route count too (FastAPI would read them whole).
    big = api.post("/v1/auth/signup", files={"file": ("a.bin", b"x" * (LIMIT + 1))})
    assert (big.status_code, big.json()) == (413, TOO_LARGE)
    # Just under the limit: read and answered as usual (the password is too long: a 422 sentence).
    padded = {"email": f"edge-{uuid.uuid4().hex[:8]}@example.com", "password": "p" * (LIMIT - 100)}
    assert len(json.dumps(padded)) < LIMIT
    r = api.post("/v1/auth/signup", json=padded)
    assert r.status_code == 422, r.text
    # Uploads keep their own limits: a photo larger than 64 KiB is accepted.
    user = api.new_user()
    photo = png(astronaut())
    assert len(photo) > 4 * LIMIT
    r = api.post("/v1/photos", files=[("files", ("me.png", photo, "image/png"))], headers=user.auth)
    assert r.status_code == 201, r.text


def test_an_upload_is_refused_before_its_body_without_a_login_or_over_the_upload_limit(
    api: Api, platform: Platform
) -> None:
    """An upload route reads its form before the dependencies that check the caller: the old gateway
    spooled a 200 MB body from anyone to disk and only then answered 401 (or 413 per file)."""
    port = _port(platform.url)
    multipart = "Content-Type: multipart/form-data; boundary=b0undary"
    part = b'--b0undary\r\nContent-Disposition: form-data; name="files"; filename="a.jpg"\r\n\r\n'
    for path in ["/v1/photos", "/v1/poses"]:
        for auth in [[], ["Authorization: Bearer not-a-token"]]:
            head = _post(path, multipart, "Content-Length: 200000000", *auth)
            status, headers, body, took = _exchange(port, head, [part])
            assert status == 401 and headers["connection"] == "close" and took < 3.0, (path, status, body)
            # no token at all is not a sign-in to repeat
            assert (b"log in first" in body) == (not auth) and (b"log in again" in body) == bool(auth), body
    user = api.new_user()
    limit = 20 * 15 * 2**20 + 2**20  # upload_max_files x upload_max_bytes + framing

    # Over the whole upload limit by Content-Length: 413 before the body is read. (A chunked body
    # meets the same count as it streams, as the JSON test shows; here the server would reset a
    # client still sending hundreds of MB, and the answer could be lost with the connection.)
    head = _post(
        "/v1/photos", multipart, f"Content-Length: {limit + 1}", f"Authorization: Bearer {user.access_token}"
    )
    status, _, body, _ = _exchange(port, head, [part], timeout=120)
    # in the limits a person chooses photos by, not the byte total (301 MiB read like a cap of its own)
    wanted = b"This upload is larger than a request may be: at most 20 photos of up to 15 MB each."
    assert status == 413 and wanted in body, (status, body)


def test_a_body_that_never_arrives_gets_408_and_frees_the_connection(stack, procs: Processes) -> None:
    port = free_port()
    procs.start("gateway-body-timeout", "gateway", "--port", str(port), env={"REQUEST_BODY_TIMEOUT": "2"})
    wait_for_port(port, timeout=60)
    sentence = {"detail": "The request body did not arrive within 2 seconds; please send it again."}
    with Api(base_url=f"http://127.0.0.1:{port}", timeout=30) as api:
        uploader = api.new_user()  # an upload's body is read once the caller passed every check
    stalled = [
        _post("/v1/auth/signup", "Content-Type: application/json", "Content-Length: 100"),
        _post(
            "/v1/photos",
            "Content-Type: multipart/form-data; boundary=b0undary",
            "Content-Length: 163000",
            f"Authorization: Bearer {uploader.access_token}",
        ),
    ]
    for head in stalled:  # headers, then nothing (the old gateway waited as long as the client)
        status, headers, body, took = _exchange(port, head, timeout=15)
        assert (status, json.loads(body)) == (408, sentence), head
        assert headers["connection"] == "close"
        assert 2.0 <= took < 5.0, took
    part = b'--b0undary\r\nContent-Disposition: form-data; name="files"; filename="a.jpg"\r\n\r\n'
    status, _, body, took = _exchange(port, stalled[1], [part], timeout=15)  # a start, then silence
    assert status == 408 and took < 6.0, (status, body)

    # A slow but steady body is not cut off: the timeout is between reads, not for the whole body.
    data = json.dumps(
        {"email": f"slow-{uuid.uuid4().hex[:8]}@example.com", "password": "correct horse battery"}
    )
    pieces = [data[:10].encode(), data[10:30].encode(), data[30:].encode()]
    head = _post("/v1/auth/signup", "Content-Type: application/json", f"Content-Length: {len(data)}")
    status, _, body, took = _exchange(port, head, pieces, pause=1.5, timeout=15)
    assert status == 202 and took > 4.0, (status, body, took)

    # Once the body is in, nothing times out: an event stream stays open past the body timeout.
    with Api(base_url=f"http://127.0.0.1:{port}", timeout=30) as api:
        user = api.new_user()
        user_id = uuid.UUID(api.get("/v1/me", headers=user.auth).json()["id"])
        with session_scope() as session:  # stays queued: no train worker runs here
            job_id = str(enqueue(session, TrainLikeness(likeness_id=uuid.uuid4()), user_id=user_id).id)
        params = {"access_token": user.access_token}
        events = 0
        started = time.monotonic()
        with api.stream("GET", f"/v1/jobs/{job_id}/events", params=params, timeout=30) as stream:
            assert stream.status_code == 200
            for line in stream.iter_lines():
                events += line.startswith("data:")
                if time.monotonic() - started > 6:  # three body timeouts, one re-read of the row
                    break
        assert events >= 2, events
        api.post(f"/v1/jobs/{job_id}/cancel", headers=user.auth)


def _answer(sock: socket.socket) -> tuple[int, bytes]:
    response = http.client.HTTPResponse(sock)
    response.begin()
    return response.status, response.read()


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    """Send in a thread; the server may stop reading and close once it has answered."""

    def send() -> None:
        try:
            sock.sendall(data)
        except OSError:
            pass

    threading.Thread(target=send, daemon=True).start()


def _latencies(url: str, seconds: float) -> list[float]:
    """GET `url` back to back for `seconds`: each answer's time (another user, during an attack)."""
    took = []
    with httpx.Client(timeout=30) as client:
        stop = time.monotonic() + seconds
        while time.monotonic() < stop:
            started = time.monotonic()
            assert client.get(url).status_code == 200
            took.append(time.monotonic() - started)
    return took


def test_request_heads_too_large_or_too_slow_get_431_and_408_and_others_are_served(
    stack, procs: Processes
) -> None:
    """uvicorn's httptools parser bounded neither the size of a request head nor its time: one 128 MB
    header froze the event loop ~20 s, 2,000 slow heads were held as long as their clients liked."""
    port = free_port()
    procs.start("gateway-heads", "gateway", "--port", str(port), env={"REQUEST_HEADER_TIMEOUT": "2"})
    wait_for_port(port, timeout=60)
    healthz = f"http://127.0.0.1:{port}/healthz"
    start = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"

    # A 64 MB header: 431 with a sentence after 32 KiB; the old gateway parsed on, quadratically.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as big:
        _send_quietly(big, start + b"X-Big: " + b"a" * 64 * 2**20)
        others = _latencies(healthz, 3.0)  # another user meanwhile
        status, body = _answer(big)
    assert (status, json.loads(body)) == (
        431,
        {"detail": "The request headers are larger than the 32 KiB this API accepts."},
    )
    assert max(others) < 0.5, f"others waited up to {max(others):.2f} s"

    # A whole head just over the limit, sent at once (one read on loopback): 431 too.
    for size in (40_000, 100_000):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as whole:
            _send_quietly(whole, start + b"X-Big: " + b"a" * size + b"\r\n\r\n")
            status, body = _answer(whole)
        assert status == 431, (size, status, body)

    # Heads of an ordinary size are served: a 16 KiB cookie.
    r = httpx.get(healthz, headers={"Cookie": "c=" + "x" * 16 * 1024}, timeout=10)
    assert r.status_code == 200

    # 300 connections that send half a head and stall, and 50 that send nothing: 408 (or a quiet
    # close for the silent ones) after 2 s, while others are served as usual.
    slow = [socket.create_connection(("127.0.0.1", port), timeout=8) for _ in range(300)]
    silent = [socket.create_connection(("127.0.0.1", port), timeout=8) for _ in range(50)]
    started = time.monotonic()
    for sock in slow:
        sock.sendall(start + b"X-Slow: 1")
    others = _latencies(healthz, 1.0)
    try:
        answers = [_answer(sock) for sock in slow]
        took = time.monotonic() - started
        assert {status for status, _ in answers} == {408}
        assert json.loads(answers[0][1]) == {
            "detail": "The request headers did not arrive within 2 seconds; please send the request again."
        }
        assert 2.0 <= took < 6.0, took
        assert all(sock.recv(1) == b"" for sock in silent)  # closed by the server
    finally:
        for sock in slow + silent:
            sock.close()
    assert max(others) < 0.5, f"others waited up to {max(others):.2f} s"


def test_an_upload_without_consent_or_over_the_rate_limit_is_refused_before_its_body(
    stack, procs: Processes
) -> None:
    """FastAPI read the whole form before the consent check and the rate limit ran: an account without
    consent made the gateway spool a 290 MB body to temp disk and only then heard 403."""
    port = free_port()
    procs.start("gateway-upload-gates", "gateway", "--port", str(port), env={"UPLOAD_RATE_LIMIT": "2/minute"})
    wait_for_port(port, timeout=60)
    multipart = "Content-Type: multipart/form-data; boundary=b0undary"
    part = b'--b0undary\r\nContent-Disposition: form-data; name="%s"; filename="a.jpg"\r\n\r\n'
    with Api(base_url=f"http://127.0.0.1:{port}", timeout=30) as api:
        stranger, user = api.new_user(consent=False), api.new_user()
        consent = (
            "Please agree to the processing of your face photos first: "
            'POST /v1/me/consent with {"accept": true}.'
        )
        for path, field in [("/v1/photos", b"files"), ("/v1/poses", b"file")]:
            auth = f"Authorization: Bearer {stranger.access_token}"
            head = _post(path, multipart, "Content-Length: 290000000", auth)
            status, _, body, took = _exchange(port, head, [part % field, b"x" * 2**20], timeout=10)
            assert (status, json.loads(body)["detail"], took < 3.0) == (403, consent, True), (path, took)

        # A file is refused as it passes the 15 MB cap: the rest of a 40 MB body is never awaited.
        head = _post(
            "/v1/photos", multipart, "Content-Length: 40000000", f"Authorization: Bearer {user.access_token}"
        )
        status, headers, body, took = _exchange(port, head, [part % b"files", b"x" * 16 * 2**20], timeout=10)
        assert (status, json.loads(body)) == (
            413,
            {"detail": "a.jpg is larger than 15 MB, the limit per photo."},
        )
        assert headers["connection"] == "close" and took < 8.0, took

        # Over the rate limit (2 a minute here): 429 before the body, too.
        photo = [("files", ("me.png", png(astronaut()), "image/png"))]
        assert api.post("/v1/photos", files=photo, headers=user.auth).status_code == 201
        head = _post(
            "/v1/photos", multipart, "Content-Length: 290000000", f"Authorization: Bearer {user.access_token}"
        )
        status, _, body, took = _exchange(port, head, [part % b"files", b"x" * 2**20], timeout=10)
        assert status == 429 and took < 3.0, (status, body, took)


def test_an_unknown_style_hears_the_styles_and_is_not_echoed(api: Api) -> None:
    """An unknown style was echoed back whole (1,000 emoji came back in the sentence) and the
    sentence did not say which styles exist; then it still quoted a short one (README: never the
    values sent). tests/gateway/test_request_bodies.py has the whole answer."""
    user = api.new_user()
    body = {"likeness_id": str(uuid.uuid4()), "styles": ["studio-busines"]}
    r = api.post("/v1/portraits", json=body, headers=user.auth)
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith("Please check this field: styles[0] (not one of the styles: ")
    assert "studio-business" in r.json()["detail"] and "studio-busines," not in r.text
    assert r.json()["errors"][0]["loc"] == ["body", "styles", 0]
    r = api.post("/v1/portraits", json={**body, "styles": ["😀" * 1000]}, headers=user.auth)
    assert r.status_code == 422 and "😀" not in r.text and len(r.text) < 1000, r.text
    assert "styles[0]" in r.json()["detail"]


def test_a_request_that_is_not_http_gets_a_json_400(api: Api, platform: Platform) -> None:
    """What httptools cannot parse was answered by uvicorn in plain text ("Invalid HTTP request
    received."), unlike every other error of the API."""
    port = _port(platform.url)
    broken = (
        b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
        b"POST /v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(32),  # a TLS ClientHello
    )
    for request in broken:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            _send_quietly(sock, request)
            status, body = _answer(sock)
        assert status == 400, (request[:40], status, body)
        assert json.loads(body) == {
            "detail": "The request is not valid HTTP/1.1 and could not be read; please check how it is sent."
        }
    assert api.get("/v1/system").status_code == 200


def test_refusals_say_what_to_fix_not_how_the_server_failed(api: Api) -> None:
    """A newcomer's findings (2026-12-07): no token at all heard "Please log in again.", a bad job ID
    pydantic's "expected an optional prefix of `urn:uuid:`...", the one-photo pose route asked for
    "the photos", and its OpenAPI text left out HEIC, which it accepts."""
    sign_in = "Please log in first: this request needs your access token (Authorization: Bearer)."
    for path in ["/v1/me", "/v1/jobs", "/v1/photos"]:  # the ORM path, the fast signed-in read path
        r = api.get(path)
        assert r.status_code == 401 and r.json() == {"detail": sign_in}, (path, r.text)
        assert r.headers["www-authenticate"] == "Bearer"
    r = api.get("/v1/me", headers={"Authorization": "Bearer not-a-token"})
    assert r.status_code == 401 and r.json() == {"detail": "Please log in again."}

    user = api.new_user()
    r = api.get("/v1/jobs/not-a-job-id", headers=user.auth)
    assert r.status_code == 422, r.text
    assert r.json()["detail"] == (
        "Please check this field: path parameter job_id "
        "(must be an ID like 123e4567-e89b-42d3-a456-426614174000)."
    )
    r = api.post(
        "/v1/poses", content=b"\xff\xd8 a photo", headers={**user.auth, "content-type": "image/jpeg"}
    )
    assert r.status_code == 400
    assert r.json() == {"detail": "Send the photo as a multipart/form-data form, in the field file."}
    pose_upload = api.get("/openapi.json").json()["paths"]["/v1/poses"]["post"]
    assert "HEIC" in json.dumps(pose_upload["requestBody"])
