"""The trainer as a service, on the real stack: the likeness API, a `train` worker on the tiny
preset (CPU), resume from an S3 checkpoint after a SIGKILL, and readable failures."""

import io
import re
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
from safetensors import safe_open
from safetensors.torch import load as load_safetensors
from sqlalchemy import select

from services.trainer.checkpoints import S3CheckpointStore
from shared import storage
from shared.db import session_scope
from shared.models import Job, Likeness, Photo, PhotoStatus
from tests.conftest import Api, Processes, UserSession, wait_until
from tests.pictures import astronaut_variants, jpeg

TRAIN_WORKER_ENV = {"OMP_NUM_THREADS": "1"}  # one torch thread: far faster on a shared 2-core box
STEP = re.compile(r"training step (\d+)/(\d+), about .+ left")


def upload_accepted(api: Api, user: UserSession, n: int) -> list[str]:
    files = [("files", (f"me{i}.jpg", jpeg(im), "image/jpeg")) for i, im in enumerate(astronaut_variants(n))]
    r = api.post("/v1/photos", files=files, headers=user.auth)
    assert r.status_code == 201, r.text
    job = api.wait_job(r.json()["job"]["id"], user)
    assert job["result"] == {"accepted": n, "rejected": 0}, job
    return [p["id"] for p in r.json()["photos"]]


def start(api: Api, user: UserSession, class_word: str = "woman", **headers: str) -> httpx.Response:
    return api.post("/v1/likenesses", json={"class_word": class_word}, headers={**user.auth, **headers})


def user_id(api: Api, user: UserSession) -> str:
    return api.get("/v1/me", headers=user.auth).json()["id"]


def likeness_row(likeness_id: str) -> Likeness | None:
    with session_scope() as session:
        row = session.get(Likeness, uuid.UUID(likeness_id))
        if row is not None:
            session.expunge(row)
        return row


def job_row(job_id: str) -> Job:
    with session_scope() as session:
        job = session.get(Job, uuid.UUID(job_id))
        session.expunge(job)
        return job


def mail_jobs(uid: str, template: str) -> list[Job]:
    with session_scope() as session:
        jobs = session.scalars(
            select(Job).where(Job.user_id == uuid.UUID(uid), Job.kind == "send_email")
        ).all()
        return [j for j in jobs if j.input.get("template") == template]


def at_first_checkpoint(api: Api) -> tuple[UserSession, str, str, str]:
    """A new user's training (a `train` worker must run) once its first checkpoint is in S3:
    (user, user id, likeness id, job id)."""
    user = api.new_user()
    uid = user_id(api, user)
    upload_accepted(api, user, 10)  # 40 tiny steps, a checkpoint every 10
    body = start(api, user).json()
    likeness_id, job_id = body["likeness"]["id"], body["job"]["id"]
    store = S3CheckpointStore(uid, likeness_id)
    wait_until(lambda: store.steps(), timeout=180, interval=0.05, what="a first checkpoint in S3")
    assert job_row(job_id).status == "running", "training ended at its first checkpoint"
    return user, uid, likeness_id, job_id


def fetch(url: str) -> bytes:
    r = httpx.get(url, timeout=30)
    assert r.status_code == 200, r.text
    return r.content


def test_train_a_likeness_download_it_and_nobody_else_can(api: Api, procs: Processes) -> None:
    procs.worker("train", **TRAIN_WORKER_ENV)  # starts while the photos are checked
    user = api.new_user()
    uid = user_id(api, user)
    upload_accepted(api, user, 8)

    r = start(api, user, **{"Idempotency-Key": "train-1"})
    assert r.status_code == 202, r.text
    likeness, job = r.json()["likeness"], r.json()["job"]
    assert likeness["status"] == "training" and likeness["class_word"] == "woman"
    assert likeness["job_id"] == job["id"] and job["kind"] == "train_likeness"
    again = start(api, user, **{"Idempotency-Key": "train-1"})  # a retried request
    assert again.status_code == 202 and again.json()["likeness"]["id"] == likeness["id"]
    assert again.json()["job"]["id"] == job["id"]
    busy = start(api, user, "man")
    assert busy.status_code == 409 and "still training" in busy.json()["detail"]

    events = api.follow_events(job["id"], user, timeout=240)
    done, seen = events[-1], [(e["progress"], e["stage"]) for e in events]
    assert done["status"] == "succeeded", done
    steps = [(p, STEP.fullmatch(s or "")) for p, s in seen]
    training = [(p, m) for p, m in steps if m]
    assert training, seen  # stage, percent and time left while it trains
    assert all(0 < p < 1 for p, _ in training)
    assert [p for p, _ in training] == sorted(p for p, _ in training)
    assert done["result"]["likeness_id"] == likeness["id"]
    assert done["result"]["resumed_from_step"] is None  # one clean attempt
    assert set(done["result"]["seconds"]) == {
        "download",
        "preprocess",
        "load",
        "train",
        "select",
        "select_render",
        "select_faces",
        "upload",
    }

    ready = api.get(f"/v1/likenesses/{likeness['id']}", headers=user.auth).json()
    assert ready["status"] == "ready"
    assert ready["base_model"].startswith("tiny-v")
    assert ready["scores"]["best_step"] == done["result"]["best_step"]
    assert [c["step"] for c in ready["scores"]["checkpoints"]][-1] == done["result"]["steps"]
    listed = api.get("/v1/likenesses", headers=user.auth).json()["likenesses"]
    assert [lk["id"] for lk in listed] == [likeness["id"]]
    meta = likeness_row(likeness["id"]).meta
    assert meta["trigger_word"] == ready["trigger_word"] and meta["rank"] == 4
    assert meta["steps"] == done["result"]["steps"]
    # The photos really trained on, as the result and the "trained on N photos" mail say.
    assert meta["photos_used"] == done["result"]["photos_used"] == 8
    # The accepted photos' face embeddings are kept with the likeness (the generator's references).
    stored = np.load(io.BytesIO(storage.get_bytes(meta["files"]["embeddings"])), allow_pickle=False)
    assert meta["files"]["embeddings"].startswith(likeness_row(likeness["id"]).object_prefix)
    assert stored.dtype == np.float32 and stored.shape == (len(meta["photos"]), 128)

    # Both formats, as presigned links with a file name.
    urls = {}
    for fmt in ("kohya", "diffusers"):
        r = api.get(f"/v1/likenesses/{likeness['id']}/download?format={fmt}", headers=user.auth)
        assert r.status_code == 200, r.text
        urls[fmt] = r.json()["url"]
    assert "pytorch_lora_weights.safetensors" in urls["diffusers"]
    assert f"likeness-{ready['trigger_word']}.safetensors" in urls["kohya"]
    kohya = fetch(urls["kohya"])
    tensors = load_safetensors(kohya)
    assert any(k.startswith("lora_unet_") for k in tensors)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "likeness.safetensors"
        path.write_bytes(kohya)
        with safe_open(str(path), framework="pt") as f:
            assert f.metadata()["studio_trigger_word"] == ready["trigger_word"]
            assert f.metadata()["ss_network_dim"] == "4"
    diffusers = load_safetensors(fetch(urls["diffusers"]))
    assert any(k.startswith("unet.") for k in diffusers)

    # Another user: not found, whatever they try.
    other = api.new_user()
    for method, path in [
        ("GET", f"/v1/likenesses/{likeness['id']}"),
        ("GET", f"/v1/likenesses/{likeness['id']}/download?format=kohya"),
        ("DELETE", f"/v1/likenesses/{likeness['id']}"),
    ]:
        assert api.request(method, path, headers=other.auth).status_code == 404
    assert api.get("/v1/likenesses", headers=other.auth).json() == {"likenesses": []}

    # The mail is on its way, once; the checkpoints are gone.
    assert len(mail_jobs(uid, "training_finished")) == 1
    prefix = storage.user_key(uid, "likenesses", likeness["id"]) + "/"
    assert S3CheckpointStore(uid, likeness["id"]).steps() == {}
    assert storage.list_keys(prefix)

    # Delete: the row and every file.
    assert api.delete(f"/v1/likenesses/{likeness['id']}", headers=user.auth).status_code == 204
    assert api.get(f"/v1/likenesses/{likeness['id']}", headers=user.auth).status_code == 404
    assert storage.list_keys(prefix) == []


def test_too_few_photos_is_refused_with_a_sentence_and_no_job(api: Api) -> None:
    user = api.new_user()
    upload_accepted(api, user, 5)
    r = start(api, user)
    assert r.status_code == 409
    assert r.json()["detail"] == "You have 5 good photos; upload 3 more to train."
    assert api.get("/v1/jobs?kind=train_likeness", headers=user.auth).json()["jobs"] == []
    assert api.get("/v1/likenesses", headers=user.auth).json()["likenesses"] == []
    assert start(api, api.new_user(consent=False)).status_code == 403


def test_photos_still_being_checked_are_named_in_the_refusal(api: Api) -> None:
    """Asking to train right after an upload whose check has not run yet: the refusal says the
    photos are still being checked (and how many), not "you have no good photos"."""
    user = api.new_user()
    uid = uuid.UUID(user_id(api, user))
    ids = [uuid.uuid4() for _ in range(10)]
    with session_scope() as session:  # as the upload leaves them until the `photos` job checks them
        for i, pid in enumerate(ids):
            session.add(
                Photo(
                    id=pid, user_id=uid, object_key=storage.user_key(uid, "photos", f"{pid}.jpg"),
                    content_type="image/jpeg", width=512, height=512, size_bytes=1000,
                    sha256=f"{i:064x}", status=PhotoStatus.checking,
                )
            )  # fmt: skip
    r = start(api, user)
    assert r.status_code == 409
    assert r.json()["detail"] == "10 of your photos are still being checked; try again in a minute."
    korean = start(api, user, **{"Accept-Language": "ko"}).json()["detail"]
    assert korean == "사진 10장을 아직 확인하고 있습니다. 1분쯤 뒤에 다시 시도해 주세요."

    def set_status(status: PhotoStatus, photo_ids: list[uuid.UUID]) -> None:
        with session_scope() as session:
            for pid in photo_ids:
                session.get(Photo, pid).status = status

    set_status(PhotoStatus.rejected, ids[1:])
    assert (
        start(api, user).json()["detail"] == "1 of your photos is still being checked; try again in a minute."
    )
    set_status(PhotoStatus.rejected, ids[:1])
    assert start(api, user).json()["detail"] == "You have no good photos yet; upload 8 to train."
    assert api.get("/v1/jobs?kind=train_likeness", headers=user.auth).json()["jobs"] == []


@pytest.mark.slow  # ~55 s: two worker starts, the stale timeout, and a wait that nothing re-runs it
def test_a_killed_training_resumes_from_its_s3_checkpoint(api: Api, procs: Processes) -> None:
    worker = procs.worker("train", **TRAIN_WORKER_ENV)
    user, uid, likeness_id, job_id = at_first_checkpoint(api)
    store = S3CheckpointStore(uid, likeness_id)
    procs.kill(worker)  # SIGKILL the worker and its pool mid-training
    killed = job_row(job_id)
    assert killed.status == "running" and killed.attempts == 1, "training ended before the kill"
    saved = max(store.steps())

    procs.worker("train", **TRAIN_WORKER_ENV)
    job = api.wait_job(job_id, user, timeout=240)
    assert job["status"] == "succeeded", job
    assert job["attempts"] == 2  # the reaper handed it to the new worker once
    resumed = job["result"]["resumed_from_step"]
    assert resumed is not None and resumed >= saved > 0
    assert likeness_row(likeness_id).meta["resumed_from_step"] == resumed
    assert api.get(f"/v1/likenesses/{likeness_id}", headers=user.auth).json()["status"] == "ready"
    assert len(mail_jobs(uid, "training_finished")) == 1  # ended once
    finished = job["finished_at"]
    time.sleep(11)  # longer than the stale timeout: nothing runs it again
    again = api.get(f"/v1/jobs/{job_id}", headers=user.auth).json()
    assert (again["status"], again["attempts"], again["finished_at"]) == ("succeeded", 2, finished)


def test_photos_deleted_before_training_fail_it_in_words(api: Api, procs: Processes) -> None:
    """The set was big enough when asked, but the user deleted photos before a worker got to it:
    the trainer's own check refuses the set, the job and the likeness fail with a reason."""
    user = api.new_user()
    uid = user_id(api, user)
    photo_ids = upload_accepted(api, user, 8)
    body = start(api, user, "man").json()  # no train worker yet: it waits in the queue
    for photo_id in photo_ids[:4]:
        assert api.delete(f"/v1/photos/{photo_id}", headers=user.auth).status_code == 204
    procs.worker("train", **TRAIN_WORKER_ENV)

    job = api.wait_job(body["job"]["id"], user, timeout=120)
    assert job["status"] == "failed" and job["attempts"] == 1, job
    assert job["error_code"] == "too_few_photos"
    assert job["error_message"] == (
        "4 of the chosen photos were deleted before training started. Only 4 photos have a clear "
        "face of you; upload 4 more (at least 8 are needed)."
    )
    # The worker kept the sentences too: the Korean page reads the same failure in Korean.
    korean = api.get(f"/v1/jobs/{job['id']}", headers={**user.auth, "Accept-Language": "ko"}).json()
    assert korean["error_message"] == (
        "고른 사진 중 4장이 학습 시작 전에 삭제되었습니다. "
        "얼굴이 선명하게 나온 사진이 4장뿐입니다. 4장 더 올려 주세요(최소 8장 필요)."
    )
    likeness = api.get(f"/v1/likenesses/{body['likeness']['id']}", headers=user.auth).json()
    assert likeness["status"] == "failed"
    r = api.get(f"/v1/likenesses/{likeness['id']}/download", headers=user.auth)
    assert r.status_code == 409 and "not ready" in r.json()["detail"]
    wait_until(lambda: mail_jobs(uid, "job_failed"), timeout=10, what="the failure mail job")
    assert mail_jobs(uid, "training_finished") == []


@pytest.mark.parametrize("class_word", ["cat", ""])
def test_only_known_class_words(api: Api, class_word: str) -> None:
    user = api.new_user()
    assert start(api, user, class_word).status_code == 422


def test_identical_photos_count_once(api: Api) -> None:
    """The same picture uploaded again (in one request or later) is rejected as a duplicate at once
    and never counts toward the 8-photo minimum; an accepted twin that slipped past the upload
    (parallel uploads) is counted once when training starts."""
    user = api.new_user()
    me0, me1 = (jpeg(im) for im in astronaut_variants(2))
    upload_accepted(api, user, 1)  # me0.jpg
    r = api.post("/v1/photos", files=[("files", ("a.jpg", me1, "image/jpeg"))] * 2, headers=user.auth)
    assert r.status_code == 201, r.text
    assert [p["reason_code"] for p in r.json()["photos"]] == [None, "duplicate"]
    api.wait_job(r.json()["job"]["id"], user)
    r = api.post("/v1/photos", files=[("files", ("b.jpg", me0, "image/jpeg"))] * 6, headers=user.auth)
    assert r.status_code == 201, r.text
    duplicate = r.json()["photos"][0]
    assert duplicate["status"] == "rejected" and duplicate["reason"].startswith("You already uploaded")
    assert api.wait_job(r.json()["job"]["id"], user)["result"] == {"accepted": 0, "rejected": 6}
    statuses = [p["status"] for p in api.get("/v1/photos", headers=user.auth).json()["photos"]]
    assert sorted(statuses) == ["accepted"] * 2 + ["rejected"] * 7

    with session_scope() as session:  # a twin accepted by a parallel upload
        twin = session.get(Photo, uuid.UUID(duplicate["id"]))
        twin.status, twin.reason_code, twin.reason = PhotoStatus.accepted, None, None
    r = start(api, user)
    assert r.status_code == 409 and r.json()["detail"] == "You have 2 good photos; upload 6 more to train."


def test_a_picture_uploaded_again_after_its_original_was_deleted_is_no_duplicate(api: Api) -> None:
    """Only a photo still there counts as the original: the rejected twin of a deleted one does not
    (the old gateway refused the picture forever once a duplicate of it had been uploaded)."""
    user = api.new_user()
    (me,) = (jpeg(im) for im in astronaut_variants(1))
    r = api.post("/v1/photos", files=[("files", ("a.jpg", me, "image/jpeg"))] * 2, headers=user.auth)
    original, twin = r.json()["photos"]
    assert twin["reason_code"] == "duplicate"
    api.wait_job(r.json()["job"]["id"], user)
    assert api.delete(f"/v1/photos/{original['id']}", headers=user.auth).status_code == 204
    again = api.post("/v1/photos", files=[("files", ("a.jpg", me, "image/jpeg"))], headers=user.auth)
    assert again.status_code == 201, again.text
    assert again.json()["photos"][0]["reason_code"] is None  # checked like any new photo


def test_the_trainer_reads_the_face_checks_the_photos_worker_stored(api: Api) -> None:
    """Each accepted photo reaches the trainer with the face and embedding its photo check stored
    (the trainer then detects no face again: tests/trainer/test_preprocess.py); a photo not
    accepted (any more) comes without one, and is checked again."""
    from types import SimpleNamespace

    from services.trainer import tasks
    from shared.faces import Face

    user = api.new_user()
    uid = uuid.UUID(user_id(api, user))
    ids = upload_accepted(api, user, 3)
    with session_scope() as session:
        session.get(Photo, uuid.UUID(ids[2])).status = PhotoStatus.rejected
        likeness = Likeness(
            user_id=uid, class_word="woman", trigger_word="zuvek", base_model="tiny", photo_ids=ids
        )
        session.add(likeness)
        session.flush()
        likeness_id = likeness.id
    try:
        class_word, chosen = tasks._load_request(SimpleNamespace(user_id=uid), likeness_id)
        images, stored = tasks._download(chosen)
    finally:
        with session_scope() as session:
            session.delete(session.get(Likeness, likeness_id))
    assert class_word == "woman" and len(images) == len(stored) == 3
    with session_scope() as session:
        rows = [session.get(Photo, uuid.UUID(i)) for i in ids]
        for row, image, check in zip(rows, images, stored, strict=True):
            if row.status is not PhotoStatus.accepted:
                assert check is None
                continue
            assert check is not None and check.face == Face.from_json(row.face)
            assert check.embedding.dtype == np.float32 and np.allclose(check.embedding, row.embedding)
            x0, y0, x1, y1 = check.face.box
            assert 0 <= x0 < x1 <= image.width and 0 <= y0 < y1 <= image.height
