"""Korean all the way (issue 23 item 5): every sentence the API answers with under
`Accept-Language: ko` is Korean, whatever the route and whatever is wrong with the request, so a new
English sentence cannot slip in unnoticed: the walk below covers every route of the OpenAPI schema
(bad ids, bad JSON, missing fields, another method, no token, no consent) and asserts no English word
in `detail` besides the API's own names (fields, formats, `POST /v1/...`)."""

import json
import re
import uuid
from pathlib import Path

import httpx

from shared.db import session_scope
from shared.i18n import EN, KO, stage_text
from shared.models import Job, JobStatus
from shared.styles import load_styles
from tests.conftest import Api, Platform, wait_until
from tests.notifier.test_notify_worker import mails_to

KOREAN = {"Accept-Language": "ko-KR,ko;q=0.9,en;q=0.8"}
HANGUL = re.compile("[\uac00-\ud7a3]")
# Words a Korean sentence may hold: formats, HTTP methods and the API's own identifiers.
NAMES = {
    "JPEG",
    "PNG",
    "WebP",
    "HEIC",
    "multipart",
    "form-data",
    "MB",
    "MiB",
    "KiB",
    "JSON",
    "UUID",
    "ID",
    "LoRA",
    "URL",
    "Idempotency-Key",
    "Authorization",  # the header and its scheme, as a client writes them
    "Bearer",
}
NAMES |= {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "true", "false", "v", "me", "docs"}
REPO = Path(__file__).resolve().parents[2]


def api_names(schema: dict) -> set[str]:
    """Every parameter and property name of the OpenAPI schema (a field is named as the API names it)."""
    names: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, dict):
            names.update(node.get("properties", {}))
            if node.get("in") in ("query", "path", "header") and "name" in node:
                names.add(node["name"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return {part for name in names for part in re.split(r"[^A-Za-z\-]+", name) if part} | names


def english_words(detail: str, allowed: set[str]) -> list[str]:
    """The Latin-letter words of `detail` that are not names the API itself uses."""
    detail = re.sub(r"\S+\.(jpe?g|png|webp|heic)\b", "", detail)  # the file name sent, echoed
    words = re.findall(r"[A-Za-z][A-Za-z\-]*", detail)
    return [w for w in words if w not in allowed and w.strip("-") not in allowed]


def test_every_english_sentence_has_a_korean_twin() -> None:
    missing = sorted(set(EN) - set(KO))
    assert not missing, f"sentences without Korean: {missing}"
    for key in EN:
        text = KO[key]
        texts = text.values() if isinstance(text, dict) else [text]
        for t in texts:
            assert HANGUL.search(t) or key in ("stage.portrait", "validation.json_at"), key


def test_every_route_answers_bad_input_in_korean(api: Api) -> None:
    schema = api.get("/openapi.json").json()
    # a field this test sends is named back as sent; style ids are the API's names of the styles
    allowed = NAMES | api_names(schema) | {"unexpected"} | set(load_styles())
    user = api.new_user()
    no_consent = api.new_user(consent=False)
    seen: list[tuple[str, str, int, str]] = []

    def check(method: str, url: str, **kwargs: object) -> None:
        r = api.request(method, url, headers={**KOREAN, **kwargs.pop("headers", {})}, **kwargs)
        if r.status_code < 400 or not r.content:
            return
        detail = r.json().get("detail")
        assert isinstance(detail, str), (method, url, r.status_code, r.text)
        seen.append((method, url, r.status_code, detail))
        assert HANGUL.search(detail), (method, url, r.status_code, detail)
        assert not english_words(detail, allowed), (method, url, r.status_code, detail)

    for path, item in schema["paths"].items():
        methods = {m.upper() for m in item if m in ("get", "post", "put", "patch", "delete", "head")}
        params = [
            p["name"] for p in item.get(next(iter(item)), {}).get("parameters", []) if p["in"] == "path"
        ]

        def fill(value: str, path: str = path, params: list[str] = params) -> str:
            return path.format(**{name: value for name in params})

        for method in methods - {"HEAD"} - ({"DELETE"} if path == "/v1/me" else set()):  # erases
            urls = [fill(str(uuid.uuid4())), fill("not-an-id")] if params else [path]
            for url in urls:
                check(method, url)  # no token
                for who in (user, no_consent):
                    check(method, url, headers=who.auth)
                    if method in ("POST", "PATCH", "PUT"):
                        raw = {**who.auth, "Content-Type": "application/json"}
                        check(method, url, headers=raw, content=b'{"oops": ')
                        check(method, url, headers=who.auth, json={"unexpected": [1, 2]})
                        check(method, url, headers=who.auth, json=[])
            check(method, fill("x") + "?limit=-1&offset=many&before=yesterday", headers=user.auth)
        for other in {"PUT", "PATCH", "DELETE", "POST"} - methods:
            check(other, fill(str(uuid.uuid4())), headers=user.auth)  # 405
    # Well-formed requests that are refused all the same.
    photo = [("files", ("me.jpg", b"\xff\xd8 not really a photo", "image/jpeg"))]
    check("POST", "/v1/photos", headers=no_consent.auth, files=photo)  # 403: consent first
    check("POST", "/v1/photos", headers=user.auth, files=photo)  # 415
    check("POST", "/v1/auth/verify-email", json={"token": "expired"})  # 400
    check("POST", "/v1/auth/login", json={"email": user.email, "password": "not the password"})
    check("POST", "/v1/likenesses", headers=user.auth, json={})
    check(
        "POST", "/v1/portraits", headers=user.auth, json={"likeness_id": str(uuid.uuid4()), "styles": ["404"]}
    )
    check("GET", "/v1/no-such-thing", headers=user.auth)
    check("GET", "/metrics")
    statuses = {status for _, _, status, _ in seen}
    assert {400, 401, 403, 404, 405, 422} <= statuses, statuses
    assert len(seen) > 100


def test_sign_up_and_password_reset_answer_and_mail_in_korean(api: Api, platform: Platform) -> None:
    """API sign-up without `locale`: the request's Accept-Language decides the mails' language."""
    email = f"kim-{uuid.uuid4().hex[:8]}@example.com"
    body = {"email": email, "password": "correct horse battery"}
    r = api.post("/v1/auth/signup", json=body, headers=KOREAN)
    assert r.status_code == 202 and HANGUL.search(r.json()["detail"]), r.text
    tokens = api.post("/v1/auth/login", json=body).json()
    me = api.get("/v1/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}).json()
    assert me["locale"] == "ko"
    mail = wait_until(lambda: mails_to(platform, email) or None, timeout=60, what="the confirmation mail")[0]
    assert HANGUL.search(mail["Subject"]), mail["Subject"]

    r = api.post("/v1/auth/password-reset", json={"email": email}, headers=KOREAN)
    assert r.status_code == 202 and HANGUL.search(r.json()["detail"]), r.text
    r = api.post(
        "/v1/auth/password-reset/confirm", json={"token": "x", "password": "long enough!!"}, headers=KOREAN
    )
    assert r.status_code == 400 and r.json()["detail"] == "링크가 잘못되었거나 만료되었습니다."

    english = f"lee-{uuid.uuid4().hex[:8]}@example.com"  # an English browser: English mail, as before
    assert api.post("/v1/auth/signup", json={**body, "email": english}).status_code == 202
    tokens = api.post("/v1/auth/login", json={**body, "email": english}).json()
    me = api.get("/v1/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}).json()
    assert me["locale"] == "en"


# Every stage label a worker writes (JobContext.progress and the pipeline's stage names).
_LABEL = re.compile(r'(?:progress\([^,\n]+,\s*|stage=)"([a-z][a-z ]+)"')


def worker_stage_labels() -> set[str]:
    labels = {"starting", "retrying", "canceled", "done", "queued"}
    for path in (REPO / "services").rglob("*.py"):
        labels |= set(_LABEL.findall(path.read_text()))
    from services.generator.pipeline import STAGES
    from shared.styles import load_styles

    names = [s.name.en for s in load_styles().values()]
    labels |= {f"{name}: {stage}" for name in names for stage in [*(s for s, _ in STAGES), "done"]}
    return labels | {"training step 2/36, about 1 min left", "training step 12/400, about 90 s left"}


def test_every_stage_label_has_words_for_people_in_both_languages() -> None:
    labels = worker_stage_labels()
    assert {"downloading photos", "checking faces", "Black-and-white: txt2img"} <= labels
    for label in labels:
        ko, en = stage_text(label, "ko"), stage_text(label, "en")
        assert HANGUL.search(ko) and not english_words(ko, set()), (label, ko)
        assert en != EN["stage.working"] and "txt2img" not in en, (label, en)
    assert stage_text("training step 2/36, about 1 min left", "ko") == "얼굴 학습 중(36단계 중 2단계)"
    assert stage_text("Black-and-white: txt2img", "ko") == "흑백: 사진 그리는 중"
    assert stage_text("Black-and-white: txt2img", "en") == "Black-and-white: painting the picture"
    assert stage_text("a label nobody wrote down", "ko") == "작업 중"


def test_a_jobs_stage_is_shown_in_the_readers_language(api: Api) -> None:
    user = api.new_user()
    me = api.get("/v1/me", headers=user.auth).json()
    with session_scope() as session:
        job = Job(
            user_id=uuid.UUID(me["id"]),
            kind="train_likeness",
            status=JobStatus.running,
            stage="training step 2/36, about 1 min left",
            progress=0.2,
        )
        session.add(job)
        session.flush()
        job_id = str(job.id)
    ko = api.get(f"/v1/jobs/{job_id}", headers={**user.auth, **KOREAN}).json()
    assert ko["stage"] == "training step 2/36, about 1 min left"  # the label, for programs
    assert ko["stage_text"] == "얼굴 학습 중(36단계 중 2단계)"
    en = api.get(f"/v1/jobs/{job_id}", headers=user.auth).json()
    assert en["stage_text"] == "learning your likeness (step 2 of 36)"
    params = {"access_token": user.access_token, "lang": "ko"}
    with (
        httpx.Client(base_url=str(api.base_url), timeout=10) as client,
        client.stream("GET", f"/v1/jobs/{job_id}/events", params=params) as stream,
    ):
        for line in stream.iter_lines():
            if line.startswith("data:"):
                assert json.loads(line[5:])["stage_text"] == "얼굴 학습 중(36단계 중 2단계)"
                break


def test_every_label_of_the_web_page_has_a_korean_twin() -> None:
    """The page's own words (services/gateway/static/locales/*.js): every English key has Korean."""
    static = REPO / "services/gateway/static/locales"

    def labels(name: str) -> dict[str, str]:
        text = (static / name).read_text(encoding="utf-8")
        return dict(re.findall(r'^\s*"([\w.]+)":\s*\n?\s*"((?:[^"\\]|\\.)*)"', text, re.M))

    en, ko = labels("en.js"), labels("ko.js")
    assert len(en) > 150
    assert not sorted(set(en) - set(ko)), sorted(set(en) - set(ko))
    english_only = [key for key, text in ko.items() if key in en and not HANGUL.search(text)]
    assert len(english_only) <= 5, english_only  # a few are names alike in both (e.g. "Portrait Studio")
