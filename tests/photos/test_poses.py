"""Pose photos on the real stack: upload -> `pose_extract` on the photos worker (MediaPipe) ->
keypoints and a presigned preview; rejection in words; ownership; delete, erasure and retention."""

import io
import uuid
from datetime import UTC, datetime, timedelta

import httpx
from PIL import Image
from skimage import data
from sqlalchemy import func, select, text, update

from services.photos.retention import sweep_expired_photos
from shared import storage
from shared.db import session_scope
from shared.models import Job, PosePhoto
from shared.pose import KEYPOINTS
from tests.conftest import Api, UserSession, wait_until
from tests.generator.test_service import _ready_likeness
from tests.pictures import jpeg


def upload(api: Api, user: UserSession, image: Image.Image, name: str = "pose.jpg") -> dict:
    r = api.post("/v1/poses", headers=user.auth, files={"file": (name, jpeg(image), "image/jpeg")})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["pose"]["status"] == "extracting" and "pose only" in body["detail"]
    job = api.wait_job(body["job"]["id"], user)
    assert job["status"] == "succeeded", job
    return api.get(f"/v1/poses/{body['pose']['id']}", headers=user.auth).json()


def test_pose_of_a_photo_rejections_and_ownership(api: Api) -> None:
    user, other = api.new_user(), api.new_user()
    pose = upload(api, user, Image.fromarray(data.astronaut()))
    assert pose["status"] == "ready" and pose["reason"] is None
    doc = pose["keypoints"]
    assert (doc["canvas_width"], doc["canvas_height"]) == (512, 512)
    flat = doc["people"][0]["pose_keypoints_2d"]
    nose = flat[3 * KEYPOINTS.index("nose") : 3 * KEYPOINTS.index("nose") + 3]
    assert abs(nose[0] - 0.44 * 512) < 15 and abs(nose[1] - 0.25 * 512) < 15 and nose[2] == 1.0
    preview = Image.open(io.BytesIO(httpx.get(pose["preview_url"], timeout=30).content))
    assert preview.size == (512, 512)
    assert httpx.get(pose["url"], timeout=30).status_code == 200
    assert [p["id"] for p in api.get("/v1/poses", headers=user.auth).json()["poses"]] == [pose["id"]]

    cat = upload(api, user, Image.fromarray(data.chelsea()), "cat.jpg")
    assert cat["status"] == "rejected" and cat["reason_code"] == "no_person"
    assert "could not find a person" in cat["reason"] and cat["preview_url"] is None
    own_likeness = str(_ready_likeness(uuid.UUID(api.get("/v1/me", headers=user.auth).json()["id"])))
    body = {"likeness_id": own_likeness, "styles": ["soft-beauty"], "pose_id": cat["id"]}
    r = api.post("/v1/portraits", json=body, headers=user.auth)
    assert r.status_code == 409 and "cannot be used (it is rejected)" in r.json()["detail"]

    # someone else's pose: not found, for reading, deleting and generating alike
    for method in ("GET", "DELETE"):
        r = api.request(method, f"/v1/poses/{pose['id']}", headers=other.auth)
        assert r.status_code == 404 and r.json() == {"detail": "Pose not found."}
    assert api.get("/v1/poses", headers=other.auth).json() == {"poses": []}
    other_likeness = str(_ready_likeness(uuid.UUID(api.get("/v1/me", headers=other.auth).json()["id"])))
    body = {"likeness_id": other_likeness, "styles": ["soft-beauty"], "pose_id": pose["id"]}
    r = api.post("/v1/portraits", json=body, headers=other.auth)
    assert r.status_code == 404 and r.json() == {"detail": "Pose not found."}

    # a retried upload with the same Idempotency-Key answers as the first; another photo is a conflict
    again = {"Idempotency-Key": "pose-1", **user.auth}
    photo = jpeg(Image.fromarray(data.astronaut()).crop((0, 0, 400, 512)))
    first = api.post("/v1/poses", headers=again, files={"file": ("p.jpg", photo, "image/jpeg")})
    retry = api.post("/v1/poses", headers=again, files={"file": ("p.jpg", photo, "image/jpeg")})
    assert first.status_code == retry.status_code == 201
    assert retry.json()["pose"]["id"] == first.json()["pose"]["id"]
    assert retry.json()["job"]["id"] == first.json()["job"]["id"]
    other_photo = {"file": ("c.jpg", jpeg(Image.fromarray(data.chelsea())), "image/jpeg")}
    assert api.post("/v1/poses", headers=again, files=other_photo).status_code == 409
    api.wait_job(first.json()["job"]["id"], user)
    assert len(api.get("/v1/poses", headers=user.auth).json()["poses"]) == 3  # astronaut, cat, crop

    # bad input: words and nothing stored
    r = api.post("/v1/poses", headers=user.auth, files={"file": ("x.jpg", b"not a photo", "image/jpeg")})
    assert r.status_code == 415 and "not a JPEG, PNG, WebP or HEIC" in r.json()["detail"]
    assert api.post("/v1/poses", headers=api.new_user(consent=False).auth, files={
        "file": ("a.jpg", jpeg(Image.fromarray(data.astronaut())), "image/jpeg")
    }).status_code == 403  # fmt: skip

    user_id = api.get("/v1/me", headers=user.auth).json()["id"]
    prefix = storage.user_key(user_id, "poses", pose["id"])
    assert len(storage.list_keys(prefix)) == 4  # photo, keypoints, skeleton, preview
    assert api.delete(f"/v1/poses/{pose['id']}", headers=user.auth).status_code == 204
    assert storage.list_keys(prefix) == []
    assert api.get(f"/v1/poses/{pose['id']}", headers=user.auth).status_code == 404


def test_a_user_keeps_a_bounded_number_of_pose_photos(api: Api) -> None:
    """Every pose upload is stored (an S3 object and a `pose_extract` job), rejected ones too, and
    there was no cap: one account could store pose photos without bound. POSES_PER_USER_MAX (50)
    rows, then 409 with a sentence that says what to do and nothing stored; a retried upload that
    was stored before is still answered as the first time."""
    user = api.new_user()
    uid = uuid.UUID(api.get("/v1/me", headers=user.auth).json()["id"])
    retried = {"Idempotency-Key": "pose-before-the-cap", **user.auth}
    photo = {"file": ("p.jpg", jpeg(Image.fromarray(data.astronaut())), "image/jpeg")}
    first = api.post("/v1/poses", headers=retried, files=photo)
    assert first.status_code == 201, first.text
    api.wait_job(first.json()["job"]["id"], user)
    with session_scope() as session:  # 49 more rows (no objects needed: only rows are counted)
        for _ in range(49):
            pid = uuid.uuid4()
            session.add(
                PosePhoto(id=pid, user_id=uid, object_key=storage.user_key(uid, "poses", f"{pid}.jpg"),
                          content_type="image/jpeg", width=512, height=512, size_bytes=1,
                          sha256=pid.hex * 2, status="rejected", reason_code="no_person")
            )  # fmt: skip
    keys = storage.list_keys(storage.user_prefix(uid))

    def stored() -> tuple[int, int]:
        with session_scope() as session:
            rows = session.scalar(select(func.count()).where(PosePhoto.user_id == uid))
            jobs = session.scalar(select(func.count()).where(Job.user_id == uid, Job.kind == "pose_extract"))
        return rows or 0, jobs or 0

    another = {"file": ("c.jpg", jpeg(Image.fromarray(data.chelsea())), "image/jpeg")}
    over = api.post("/v1/poses", headers=user.auth, files=another)
    assert over.status_code == 409, over.text
    assert over.json()["detail"] == (
        "You have 50 pose photos and can keep at most 50; delete some (rejected ones first) "
        "before uploading another."
    )
    korean = api.post("/v1/poses", headers={**user.auth, "Accept-Language": "ko"}, files=another)
    assert korean.status_code == 409 and korean.json()["detail"] == (
        "자세 사진이 50장 있으며 최대 50장까지 보관할 수 있습니다. 더 올리려면 먼저 "
        "자세 사진을 지워 주세요(거절된 사진부터)."
    )
    assert stored() == (50, 1) and storage.list_keys(storage.user_prefix(uid)) == keys

    again = api.post("/v1/poses", headers=retried, files=photo)  # stored before the cap: as the first time
    assert again.status_code == 201, again.text
    assert again.json()["pose"]["id"] == first.json()["pose"]["id"]
    assert again.json()["job"]["id"] == first.json()["job"]["id"]
    assert stored() == (50, 1)

    rejected = next(
        p for p in api.get("/v1/poses", headers=user.auth).json()["poses"] if p["status"] == "rejected"
    )
    assert api.delete(f"/v1/poses/{rejected['id']}", headers=user.auth).status_code == 204
    room = api.post("/v1/poses", headers=user.auth, files=another)  # room again
    assert room.status_code == 201, room.text
    api.wait_job(room.json()["job"]["id"], user)
    assert stored() == (50, 2)


def test_erasure_and_retention_cover_pose_photos(api: Api) -> None:
    user = api.new_user()
    user_id = api.get("/v1/me", headers=user.auth).json()["id"]
    old = upload(api, user, Image.fromarray(data.astronaut()))
    kept = upload(api, user, Image.fromarray(data.astronaut()).crop((0, 0, 400, 512)))
    with session_scope() as session:
        session.execute(
            update(PosePhoto)
            .where(PosePhoto.id == uuid.UUID(old["id"]))
            .values(created_at=datetime.now(UTC) - timedelta(days=31))
        )
    assert sweep_expired_photos() >= 1
    assert storage.list_keys(storage.user_key(user_id, "poses", old["id"])) == []
    assert api.get(f"/v1/poses/{old['id']}", headers=user.auth).status_code == 404
    assert len(storage.list_keys(storage.user_key(user_id, "poses", kept["id"]))) == 4

    assert api.delete("/v1/me", headers=user.auth).status_code == 202

    def gone() -> bool:
        with session_scope() as session:
            rows = session.execute(
                text("SELECT count(*) FROM pose_photos WHERE user_id = :u"), {"u": user_id}
            ).scalar()
        return rows == 0 and storage.list_keys(storage.user_prefix(user_id)) == []

    wait_until(gone, timeout=60, what="the user's pose photos to be erased")


def test_a_photo_of_two_people_gives_the_most_prominent_ones_pose_and_says_so(api: Api) -> None:
    from tests.pictures import group_of_two

    user = api.new_user()
    group = group_of_two()  # a smaller person on the left, the most prominent one from x = 640
    pose = upload(api, user, group, "group.jpg")
    assert pose["status"] == "ready" and pose["reason_code"] == "several_people"
    assert pose["reason"].startswith("2 people in this photo: we use the pose of the most prominent one")
    doc = pose["keypoints"]
    assert len(doc["people"]) == 1
    flat = doc["people"][0]["pose_keypoints_2d"]
    nose_x = flat[3 * KEYPOINTS.index("nose")]
    assert nose_x > 640 + 0.3 * 1024  # on the prominent person, whom the preview draws
    korean = api.get(f"/v1/poses/{pose['id']}", headers={**user.auth, "Accept-Language": "ko"}).json()
    assert korean["reason"].startswith("이 사진에는 여러 사람이 있어 가장 크게 나온 사람의 자세를 씁니다")
    preview = Image.open(io.BytesIO(httpx.get(pose["preview_url"], timeout=30).content))
    assert preview.size == (768, round(768 * group.height / group.width))
