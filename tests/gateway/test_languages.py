"""The gateway answers in the request's language (shared/i18n.py, `Accept-Language`; `?lang=` on the
event stream): refusals, a failed job's message and the style names, in Korean for `ko`, and the
same English as before for anything else."""

import json
import uuid

import pytest
from PIL import Image
from skimage import data

from services.trainer.preprocess import TooFewPhotos
from services.trainer.tasks import _user_error
from shared.db import session_scope
from shared.i18n import CATALOGS, EN, job_error_message, negotiate
from shared.models import Job, JobStatus
from tests.conftest import Api
from tests.photos.test_poses import upload as upload_pose
from tests.pictures import jpeg
from tests.trainer.test_service import start, upload_accepted, user_id

KO = {"Accept-Language": "ko-KR,ko;q=0.9,en;q=0.8"}  # what a Korean browser sends
HANGUL = range(0xAC00, 0xD7A4)


def korean(text: str) -> bool:
    return any(ord(ch) in HANGUL for ch in text)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("ko", "ko"),
        ("ko-KR,ko;q=0.9,en-US;q=0.8,en;q=0.7", "ko"),
        ("en-US,en;q=0.9,ko;q=0.8", "en"),
        ("fr-FR, fr;q=0.9", "en"),  # nothing fits: English
        ("fr, ko;q=0.5", "ko"),
        ("ko;q=0, en", "en"),  # q=0: not acceptable
        ("*", "en"),
        ("", "en"),
        (None, "en"),
    ],
)
def test_accept_language_negotiation(header: str | None, expected: str) -> None:
    assert negotiate(header) == expected


def test_every_korean_sentence_has_an_english_one_with_the_same_values() -> None:
    import string

    def fields(template: str | dict) -> set[str]:
        texts = template.values() if isinstance(template, dict) else [template]
        return {f for text in texts for _, f, _, _ in string.Formatter().parse(text) if f}

    for key, template in CATALOGS["ko"].items():
        if key in EN:  # Korean may leave values out, never add one English lacks
            assert fields(template) <= fields(EN[key]) | {"count"}, key


def test_refusals_come_in_the_requests_language(api: Api) -> None:
    user = api.new_user()
    bad = [("files", ("notes.jpg", b"this is not a picture", "image/jpeg"))]
    english = api.post("/v1/photos", files=bad, headers=user.auth)
    assert english.status_code == 415
    assert english.json() == {"detail": "notes.jpg is not a JPEG, PNG, WebP or HEIC photo."}
    r = api.post("/v1/photos", files=bad, headers={**user.auth, **KO})
    assert r.status_code == 415
    assert r.json() == {"detail": "notes.jpg 파일은 JPEG, PNG, WebP, HEIC 사진이 아닙니다."}
    r = api.post("/v1/photos", files=bad, headers={**user.auth, "Accept-Language": "fr"})
    assert r.json() == english.json()

    upload_accepted(api, user, 5)  # too few to train
    r = start(api, user, **KO)
    assert r.status_code == 409
    assert r.json()["detail"] == "통과한 사진이 5장입니다. 학습하려면 3장 더 올려 주세요."
    assert start(api, user).json()["detail"] == "You have 5 good photos; upload 3 more to train."

    r = api.post("/v1/auth/login", json={"email": user.email, "password": "wrong password!"}, headers=KO)
    assert r.status_code == 401 and r.json()["detail"] == "이메일 주소나 비밀번호가 맞지 않습니다."


def test_a_failed_jobs_message_in_the_readers_language(api: Api) -> None:
    """The sentences the trainer stores with a failure (`result.error_sentences`) are shown in
    Korean on GET and on the event stream (`?lang=ko`); English stays the stored text."""
    user = api.new_user()
    error = _user_error(TooFewPhotos(3, 8, []), 2)  # as the train worker builds it
    with session_scope() as session:
        job = Job(
            user_id=uuid.UUID(user_id(api, user)),
            kind="train_likeness",
            status=JobStatus.failed,
            error_code=error.code,
            error_message=error.message,
            result=error.result(),
        )
        session.add(job)
        session.flush()
        job_id = str(job.id)
    ko = (
        "고른 사진 중 2장이 학습 시작 전에 삭제되었습니다. "
        "얼굴이 선명하게 나온 사진이 3장뿐입니다. 5장 더 올려 주세요(최소 8장 필요)."
    )
    en = (
        "2 of the chosen photos were deleted before training started. Only 3 photos have a clear "
        "face of you; upload 5 more (at least 8 are needed)."
    )
    assert api.get(f"/v1/jobs/{job_id}", headers=user.auth).json()["error_message"] == en
    assert api.get(f"/v1/jobs/{job_id}", headers={**user.auth, **KO}).json()["error_message"] == ko
    listed = api.get("/v1/jobs", headers={**user.auth, **KO}).json()["jobs"]
    assert [j["error_message"] for j in listed if j["id"] == job_id] == [ko]
    params = {"access_token": user.access_token, "lang": "ko"}
    with api.stream("GET", f"/v1/jobs/{job_id}/events", params=params) as stream:
        data = [json.loads(line[5:]) for line in stream.iter_lines() if line.startswith("data:")]
    assert [d["error_message"] for d in data] == [ko]


def test_style_names_in_both_languages(api: Api) -> None:
    user = api.new_user()
    styles = api.get("/v1/styles", headers=user.auth).json()["styles"]
    assert len(styles) >= 8
    for style in styles:
        assert set(style["name"]) == {"en", "ko"} == set(style["description"])
        assert korean(style["name"]["ko"]) and not korean(style["name"]["en"]), style
        assert style["preview_url"] == f"/v1/styles/{style['id']}/preview"  # the drawn sample card
    r = api.get("/v1/styles/black-white/preview")
    assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml")
    assert r.text.startswith("<svg") and "script" not in r.text
    r = api.get("/v1/styles/no-such-style/preview")  # a 404 with a sentence, not a broken link
    assert r.status_code == 404 and r.json() == {"detail": "Preview of this style not found."}
    names = {s["id"]: s["name"] for s in styles}
    assert names["black-white"] == {"en": "Black-and-white", "ko": "흑백"}


def test_rejection_reasons_of_photos_and_poses_in_the_readers_language(api: Api) -> None:
    """The workers store a reason code and an English sentence; Korean readers get the catalogue's."""
    user = api.new_user()
    tiny = [("files", ("tiny.jpg", jpeg(Image.new("RGB", (40, 40), "grey")), "image/jpeg"))]
    r = api.post("/v1/photos", files=tiny, headers=user.auth)
    api.wait_job(r.json()["job"]["id"], user)
    photo_id = r.json()["photos"][0]["id"]
    english = api.get(f"/v1/photos/{photo_id}", headers=user.auth).json()
    assert english["reason_code"] == "too_small" and english["reason"].startswith("Photo too small")
    korean = api.get(f"/v1/photos/{photo_id}", headers={**user.auth, **KO}).json()
    assert korean["reason"] == (
        "사진이 너무 작습니다(40x40픽셀). 가로와 세로가 128픽셀 이상이고 얼굴이 크게 나온 사진을 올려 주세요."
    )

    cat = upload_pose(api, user, Image.fromarray(data.chelsea()), "cat.jpg")
    assert cat["reason_code"] == "no_person" and cat["reason"].startswith("We could not find a person")
    listed = api.get("/v1/poses", headers={**user.auth, **KO}).json()["poses"]
    assert [p["reason"] for p in listed] == [
        "이 사진에서 사람을 찾지 못했습니다. 한 사람이 잘 보이는 사진을 골라 주세요."
    ]


@pytest.mark.parametrize(
    ("code", "korean_text"),
    [
        ("likeness_deleted", "이 닮은꼴 모델은 삭제되었습니다. 새로 학습해 주세요."),
        ("too_few_photos", None),  # its Korean needs values this job did not store: the English stays
        ("something_new", None),  # not in the catalogue: the English stays
    ],
)
def test_a_job_error_without_sentences_by_its_code(code: str, korean_text: str | None) -> None:
    english = "The worker's own English sentence."
    assert job_error_message(code, english, None, "en") == english
    assert job_error_message(code, english, {"last_error": "x"}, "ko") == (korean_text or english)


def test_a_training_under_way_is_refused_in_korean(api: Api) -> None:
    user = api.new_user()
    upload_accepted(api, user, 8)
    job_id = start(api, user).json()["job"]["id"]  # no `train` worker here: it stays queued
    r = start(api, user, **KO)
    assert r.status_code == 409
    assert r.json()["detail"] == "닮은꼴 모델이 아직 학습 중입니다. 학습이 끝난 뒤에 새로 시작해 주세요."
    assert api.post(f"/v1/jobs/{job_id}/cancel", headers=user.auth).status_code == 200
    r = api.post(f"/v1/jobs/{job_id}/cancel", headers={**user.auth, **KO})
    assert r.status_code == 409 and r.json()["detail"] == "이 작업은 이미 끝났습니다."
