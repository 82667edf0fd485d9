"""The generator as a service, on the real stack: the styles and portraits API, a `generate`
worker on the tiny preset (CPU), S3 objects and Portrait rows, the mail follow-up, ownership.

The likeness is put in place directly (a random LoRA under the user's prefix and a ready row):
training is the trainer's test."""

import io
import tempfile
import time
import uuid
import zipfile
from pathlib import Path

import httpx
from PIL import Image
from sqlalchemy import select

from services.generator.metadata import read_png_metadata
from shared import storage
from shared.db import session_scope
from shared.models import Job, Likeness, Photo, PhotoStatus, Portrait
from tests.conftest import Api, Processes, UserSession, wait_until
from tests.generator.helpers import make_lora

WORKER_ENV = {"OMP_NUM_THREADS": "1"}  # one torch thread: far faster on a shared 2-core box


def _user_id(api: Api, user: UserSession) -> uuid.UUID:
    return uuid.UUID(api.get("/v1/me", headers=user.auth).json()["id"])


def _ready_likeness(uid: uuid.UUID) -> uuid.UUID:
    """A trained-looking likeness: LoRA in S3 where the trainer puts it, one accepted photo."""
    from shared.ml import loading

    likeness_id, photo_id = uuid.uuid4(), uuid.uuid4()
    prefix = storage.user_key(uid, "likenesses", str(likeness_id))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pytorch_lora_weights.safetensors"
        make_lora(loading.load_base_pipeline("tiny", "cpu"), path, seed=5)
        lora_key = f"{prefix}/diffusers/{path.name}"
        storage.put_bytes(lora_key, path.read_bytes(), "application/octet-stream")
    from skimage.data import astronaut

    buffer = io.BytesIO()
    Image.fromarray(astronaut()).save(buffer, format="JPEG")
    photo_key = storage.user_key(uid, "photos", f"{photo_id}.jpg")
    storage.put_bytes(photo_key, buffer.getvalue(), "image/jpeg")
    with session_scope() as session:
        session.add(
            Photo(
                id=photo_id, user_id=uid, object_key=photo_key, content_type="image/jpeg",
                width=512, height=512, size_bytes=len(buffer.getvalue()), sha256="0" * 64,
                status=PhotoStatus.accepted,
            )
        )  # fmt: skip
        session.add(
            Likeness(
                id=likeness_id, user_id=uid, status="ready", class_word="woman",
                trigger_word="zuvek", base_model=loading.base_model_id("tiny"), photo_ids=[str(photo_id)],
                object_prefix=prefix + "/", meta={"files": {"diffusers": lora_key}},
            )
        )  # fmt: skip
    return likeness_id


def test_generate_list_zip_delete_and_nobody_else(api: Api, procs: Processes) -> None:
    user = api.new_user()
    procs.worker("generate", **WORKER_ENV)
    uid = _user_id(api, user)
    styles = api.get("/v1/styles", headers=user.auth).json()["styles"]
    assert len(styles) >= 8 and {"id", "name", "description", "preview_url"} <= set(styles[0])
    assert styles[0]["description"]["ko"]

    likeness_id = _ready_likeness(uid)
    body = {"likeness_id": str(likeness_id), "styles": ["studio-business", "black-white"], "count": 1}
    r = api.post("/v1/portraits", json=body, headers={**user.auth, "Idempotency-Key": "gen-1"})
    assert r.status_code == 202, r.text
    job = r.json()["job"]
    again = api.post("/v1/portraits", json=body, headers={**user.auth, "Idempotency-Key": "gen-1"})
    assert again.status_code == 202 and again.json()["job"]["id"] == job["id"]
    bad = api.post("/v1/portraits", json={**body, "styles": ["nope"]}, headers=user.auth)
    assert bad.status_code == 422 and "styles[0] (not one of the styles: " in bad.json()["detail"]

    events = api.follow_events(job["id"], user, timeout=240)
    done, seen = events[-1], [(e["progress"], e["stage"]) for e in events]
    assert done["status"] == "succeeded", done
    assert done["result"]["portraits"] == 2
    stages = done["result"]["seconds"]
    assert {"load", "prepare", "txt2img", "detail", "beautify", "upscale", "store"} <= set(stages)
    assert all(v >= 0 for v in stages.values())
    stages = [s for _, s in seen if s]
    assert any("txt2img" in s for s in stages) and any("upscale" in s for s in stages)

    listed = api.get("/v1/portraits", params={"job_id": job["id"]}, headers=user.auth).json()
    portraits = listed["portraits"]
    assert sorted(p["style"] for p in portraits) == ["black-white", "studio-business"]
    for p in portraits:
        assert (p["width"], p["height"]) == (256, 384)  # the tiny scale, upscaled 2x
        png = httpx.get(p["url"], timeout=30).content
        parameters, meta = read_png_metadata(png)
        assert "zuvek woman" in parameters and "<lora:likeness-zuvek:1>" in parameters
        assert meta["style"] == p["style"]
        assert httpx.get(p["thumb_url"], timeout=30).headers["content-type"] == "image/jpeg"
    with session_scope() as session:
        rows = session.scalars(select(Portrait).where(Portrait.job_id == uuid.UUID(job["id"]))).all()
        assert all(r.object_key.startswith(f"users/{uid}/portraits/{job['id']}/") for r in rows)
        mails = session.scalars(select(Job).where(Job.user_id == uid, Job.kind == "send_email")).all()
        # Sign-up mailed a verification link; this job mails exactly one "portraits ready".
        assert sorted(m.input["template"] for m in mails) == ["portraits_ready", "verify_email"]

    z = api.get("/v1/portraits/zip", params={"job_id": job["id"]}, headers=user.auth)
    assert z.status_code == 200
    with zipfile.ZipFile(io.BytesIO(z.content)) as zf:
        assert len([n for n in zf.namelist() if n.endswith(".png")]) == 2

    other = api.new_user()
    listing = api.get("/v1/portraits", params={"job_id": job["id"]}, headers=other.auth)
    assert listing.status_code == 404  # another user's job is not found, as every id of theirs
    assert api.get("/v1/portraits", headers=other.auth).json()["portraits"] == []
    assert api.get("/v1/portraits/zip", params={"job_id": job["id"]}, headers=other.auth).status_code == 404
    assert api.delete(f"/v1/portraits/{portraits[0]['id']}", headers=other.auth).status_code == 404
    theirs = api.post("/v1/portraits", json=body, headers=other.auth)
    assert theirs.status_code == 404  # not their likeness

    assert api.delete(f"/v1/portraits/{portraits[0]['id']}", headers=user.auth).status_code == 204
    left = api.get("/v1/portraits", params={"job_id": job["id"]}, headers=user.auth).json()
    assert [p["id"] for p in left["portraits"]] == [portraits[1]["id"]]
    prefix = storage.user_key(uid, "portraits", job["id"]) + "/"
    assert len(storage.list_keys(prefix)) == 2  # the other PNG and its thumbnail


def _portrait_rows(job_id: str) -> list[Portrait]:
    with session_scope() as session:
        rows = session.scalars(select(Portrait).where(Portrait.job_id == uuid.UUID(job_id))).all()
        session.expunge_all()
        return list(rows)


def _job_row(job_id: str) -> Job:
    with session_scope() as session:
        job = session.get(Job, uuid.UUID(job_id))
        session.expunge(job)
        return job


def _stopped(worker, job_id: str) -> bool:
    """The worker's runner logged that this attempt ended on a cancel."""
    with open(worker.log_path, encoding="utf-8", errors="replace") as log:
        return f"job {job_id} canceled during attempt 1" in log.read()


def test_deleting_the_likeness_cancels_its_portrait_jobs(api: Api, procs: Processes) -> None:
    """Deleting a likeness while its portraits are drawn cancels its portrait jobs, as it cancels
    its training: the running one stops at its next stage and stores nothing more, the queued one
    never runs, both end `canceled` (not `failed`, no mail) with a stage that says why. The
    portraits the running job had stored stay, rows and objects alike (the user's pictures)."""
    worker = procs.worker("generate", **WORKER_ENV)
    user = api.new_user()
    uid = _user_id(api, user)
    likeness_id = _ready_likeness(uid)
    body = {"likeness_id": str(likeness_id), "styles": ["studio-business", "black-white"], "count": 2}
    running = api.post("/v1/portraits", json=body, headers=user.auth).json()["job"]["id"]
    queued = api.post("/v1/portraits", json=body, headers=user.auth).json()["job"]["id"]
    wait_until(lambda: len(_portrait_rows(running)) == 2, timeout=240, what="the first style's portraits")
    assert _job_row(running).status == "running", "the job ended before the delete"

    assert api.delete(f"/v1/likenesses/{likeness_id}", headers=user.auth).status_code == 204
    wait_until(lambda: _stopped(worker, running), timeout=60, what="the worker to stop the job")
    time.sleep(2)  # a worker that went on would store the second style's portraits by now
    for job_id in (running, queued):
        job = api.get(f"/v1/jobs/{job_id}", headers=user.auth).json()
        assert (job["status"], job["stage"], job["error_code"]) == ("canceled", "likeness deleted", None), job
        assert job["stage_text"] == "canceled: the likeness was deleted"
    ko = api.get(f"/v1/jobs/{running}", headers={**user.auth, "Accept-Language": "ko"}).json()
    assert ko["stage_text"] == "취소됨: 닮은꼴 모델이 삭제됨"
    rows = _portrait_rows(running)
    assert [r.style for r in rows] == ["studio-business"] * 2 and {r.likeness_id for r in rows} == {None}
    kept = sorted(k for r in rows for k in (r.object_key, r.thumb_key))
    assert sorted(storage.list_keys(storage.user_key(uid, "portraits", running) + "/")) == kept
    assert _portrait_rows(queued) == []
    with session_scope() as session:
        mails = session.scalars(select(Job).where(Job.user_id == uid, Job.kind == "send_email")).all()
        assert sorted(m.input["template"] for m in mails) == ["verify_email"]  # no failure mail
    assert worker.poll() is None  # the worker lives on for the next job
