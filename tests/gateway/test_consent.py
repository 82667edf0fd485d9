"""Consent to process face photos is given with POST /v1/me/consent and withdrawn with DELETE: the
withdrawal deletes every photo, pose photo and likeness (rows and objects), cancels the likenesses'
jobs under way, and keeps the account and its portraits (GDPR Art. 7(3): withdrawing is as easy as
giving; before, only erasing the whole account ended it)."""

import uuid

from PIL import Image

from shared import storage
from shared.db import session_scope
from shared.models import Job, Likeness, Portrait, PosePhoto
from tests.conftest import Api
from tests.pictures import astronaut, jpeg, png


def _face_data(api: Api, user) -> dict[str, str]:
    """A checked photo (through the API), a likeness whose training is running and its LoRA file, a
    ready pose photo and a portrait (rows and objects, as the workers would leave them)."""
    up = api.post(
        "/v1/photos", headers=user.auth, files=[("files", ("a.jpg", jpeg(astronaut()), "image/jpeg"))]
    ).json()
    api.wait_job(up["job"]["id"], user)
    user_id = uuid.UUID(api.get("/v1/me", headers=user.auth).json()["id"])
    with session_scope() as session:
        training = Job(user_id=user_id, kind="train_likeness", status="running", input={})
        session.add(training)
        session.flush()
        likeness = Likeness(
            user_id=user_id, status="training", class_word="person", trigger_word="ohwx",
            base_model="tiny", job_id=training.id,
        )  # fmt: skip
        pose = PosePhoto(
            user_id=user_id, object_key="", content_type="image/jpeg", width=512, height=512,
            size_bytes=1, sha256="0" * 64, status="ready", keypoints={"people": []},
        )  # fmt: skip
        made = Job(user_id=user_id, kind="generate_portraits", status="succeeded", input={})
        session.add_all([likeness, pose, made])
        session.flush()
        storage.put_bytes(
            storage.user_key(user_id, "likenesses", str(likeness.id), "lora.safetensors"),
            b"x",
            "application/octet-stream",
        )
        pose.object_key = storage.user_key(user_id, "poses", f"{pose.id}.jpg")
        storage.put_bytes(pose.object_key, jpeg(astronaut()), "image/jpeg")
        portrait_key = storage.user_key(user_id, "portraits", f"{made.id}.png")
        storage.put_bytes(portrait_key, png(Image.new("RGB", (8, 8))), "image/png")
        session.add(
            Portrait(
                user_id=user_id,
                job_id=made.id,
                likeness_id=likeness.id,
                style="black-white",
                seed=1,
                object_key=portrait_key,
                width=8,
                height=8,
            )  # fmt: skip
        )
        return {"user_id": str(user_id), "training": str(training.id), "portrait_key": portrait_key}


def _withdraw(api: Api, user, detail: str, **counts: int) -> None:
    """DELETE /v1/me/consent answers 200 with `detail` and the counts (`counts`, else 0)."""
    r = api.delete("/v1/me/consent", headers=user.auth)
    assert r.status_code == 200, r.text
    zero = {"photos": 0, "poses": 0, "likenesses": 0, "jobs_canceled": 0}
    assert r.json() == {"detail": detail, **zero, **counts}, r.text


def test_withdrawing_consent_deletes_the_face_data_and_keeps_the_account_and_portraits(api: Api) -> None:
    user = api.new_user()
    ids = _face_data(api, user)
    assert len(storage.list_keys(storage.user_prefix(uuid.UUID(ids["user_id"])))) == 4

    _withdraw(
        api,
        user,
        "Your consent is withdrawn: your photos, pose photos and likeness models are deleted, and their "
        "trainings and portrait jobs under way are canceled. Your portraits and account stay.",
        photos=1, poses=1, likenesses=1, jobs_canceled=1,
    )  # fmt: skip

    for listing, field in (
        ("/v1/photos", "photos"),
        ("/v1/likenesses", "likenesses"),
        ("/v1/poses", "poses"),
    ):
        assert api.get(listing, headers=user.auth).json()[field] == [], listing
    assert len(api.get("/v1/portraits", headers=user.auth).json()["portraits"]) == 1
    assert storage.list_keys(storage.user_prefix(uuid.UUID(ids["user_id"]))) == [ids["portrait_key"]]
    training = api.get(f"/v1/jobs/{ids['training']}", headers=user.auth).json()
    assert training["status"] == "canceled" and training["stage"] == "consent withdrawn", training
    assert training["stage_text"] == "canceled: the consent to process face photos was withdrawn"
    me = api.get("/v1/me", headers=user.auth)
    assert me.status_code == 200 and me.json()["face_consent_at"] is None, me.text
    # Uploads need the consent again, and store nothing without it.
    again = api.post(
        "/v1/photos", headers=user.auth, files=[("files", ("b.jpg", jpeg(astronaut()), "image/jpeg"))]
    )
    assert again.status_code == 403, again.text
    assert again.json()["detail"] == (  # it names the call that gives it
        'Please agree to the processing of your face photos first: POST /v1/me/consent with {"accept": true}.'
    )
    again = api.post(
        "/v1/poses",
        headers={**user.auth, "Accept-Language": "ko"},
        files=[("file", ("b.jpg", jpeg(astronaut()), "image/jpeg"))],
    )
    assert again.status_code == 403, again.text
    assert again.json()["detail"] == (
        '먼저 얼굴 사진 처리에 동의해 주세요. POST /v1/me/consent에 {"accept": true}를 보내면 동의합니다.'
    )
    # Idempotent: nothing left to withdraw or delete, and the sentence says so (it said "your photos
    # ... are deleted" with every count 0, then "Your consent is withdrawn" of a consent long gone).
    # Then consent given again with nothing uploaded: withdrawn, nothing to delete.
    none_given = (
        "There was no consent to withdraw: this account has not agreed to the processing of face "
        "photos, or already withdrew it, and no face photos are stored. Your portraits and account stay."
    )
    nothing_stored = (
        "Your consent is withdrawn; there were no photos, pose photos or likeness models to delete. "
        "Your portraits and account stay."
    )
    for consent_first, sentence in ((False, none_given), (True, nothing_stored)):
        if consent_first:
            assert api.post("/v1/me/consent", json={"accept": True}, headers=user.auth).status_code == 200
        _withdraw(api, user, sentence)
        again = api.delete("/v1/me/consent", headers={**user.auth, "Accept-Language": "ko"})
        assert again.json()["detail"].startswith("철회할 동의가 없습니다.")
    assert api.post("/v1/me/consent", json={"accept": True}, headers=user.auth).status_code == 200
    up = api.post(
        "/v1/photos", headers=user.auth, files=[("files", ("c.jpg", jpeg(astronaut()), "image/jpeg"))]
    )
    assert up.status_code == 201, up.text
    # Photos but no job under way: no word of canceled jobs.
    _withdraw(
        api,
        user,
        "Your consent is withdrawn: your photos, pose photos and likeness models are deleted. "
        "Your portraits and account stay.",
        photos=1,
    )


def test_withdrawing_consent_touches_no_other_account(api: Api) -> None:
    alice, bob = api.new_user(), api.new_user()
    ids = _face_data(api, bob)
    assert api.delete("/v1/me/consent", headers=alice.auth).status_code == 200
    assert len(storage.list_keys(storage.user_prefix(uuid.UUID(ids["user_id"])))) == 4
    assert len(api.get("/v1/photos", headers=bob.auth).json()["photos"]) == 1
    assert api.get("/v1/me", headers=bob.auth).json()["face_consent_at"] is not None
