"""A writer killed between its S3 write and its database commit leaves no orphaned object: the
write was announced first (shared/pending_objects.py) and the retention sweep deletes what never
settled. Real gateway process, real SIGKILL, real Postgres lock to hold the commit back."""

import threading
import uuid

import httpx
from sqlalchemy import func, select, text

from shared import pending_objects, storage
from shared.db import get_engine, session_scope
from shared.localstack import free_port, wait_for_port
from shared.models import PendingObject, Photo, PosePhoto
from tests.conftest import Api, Processes, studio, wait_until
from tests.pictures import astronaut_variants, jpeg


def _files(n: int) -> list:
    return [("files", (f"me{i}.jpg", jpeg(img), "image/jpeg")) for i, img in enumerate(astronaut_variants(n))]


def _photo_rows(user_id: uuid.UUID) -> int:
    with session_scope() as session:
        return session.scalar(select(func.count()).select_from(Photo).where(Photo.user_id == user_id))


def _pending(keys: list[str]) -> int:
    with session_scope() as session:
        return session.scalar(
            select(func.count()).select_from(PendingObject).where(PendingObject.key.in_(keys))
        )


def test_a_gateway_killed_mid_upload_leaves_no_orphan_after_the_sweep(api: Api, procs: Processes) -> None:
    user = api.new_user()
    user_id = uuid.UUID(api.get("/v1/me", headers=user.auth).json()["id"])
    prefix = storage.user_prefix(user_id)
    port = free_port()
    # This gateway waits for Postgres as long as the test holds the lock (the default gives up in 2 s
    # and deletes its writes itself: the fast path, not what this test is about).
    slow_db = {"DATABASE_READ_TIMEOUT": "120"}
    victim = procs.start("gateway-victim", "gateway", "--port", str(port), env=slow_db)
    wait_for_port(port, timeout=60)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: httpx.get(f"{url}/readyz", timeout=5).status_code == 200, timeout=60, what="ready")

    files = _files(3)
    with get_engine().connect() as lock:
        lock.execute(text("LOCK TABLE photos IN EXCLUSIVE MODE"))  # reads pass, the INSERT waits
        upload = threading.Thread(
            target=lambda: httpx.post(f"{url}/v1/photos", files=files, headers=user.auth, timeout=120),
            daemon=True,
        )
        upload.start()
        # The three objects are written, the rows wait for the lock: kill the gateway right there.
        wait_until(lambda: len(storage.list_keys(prefix)) == 3, timeout=60, what="the 3 writes")
        procs.kill(victim)
        lock.rollback()
    upload.join(timeout=30)

    orphans = storage.list_keys(prefix)
    assert len(orphans) == 3 and _photo_rows(user_id) == 0  # objects no row names ...
    assert _pending(orphans) == 3  # ... but announced before they were written
    assert pending_objects.sweep(grace_seconds=3600) == 0  # too young: a writer may still commit
    swept = studio("sweep", "--grace-seconds", "0")  # what an operator runs; the scheduler, hourly
    assert swept.returncode == 0, swept.stderr
    assert int(swept.stdout.split("orphaned objects deleted: ")[1].split()[0]) >= 3, swept.stdout
    assert storage.list_keys(prefix) == [] and _pending(orphans) == 0


def test_settled_writes_are_never_swept(api: Api) -> None:
    user = api.new_user()
    user_id = uuid.UUID(api.get("/v1/me", headers=user.auth).json()["id"])
    r = api.post("/v1/photos", files=_files(2), headers=user.auth)
    assert r.status_code == 201, r.text
    keys = storage.list_keys(storage.user_prefix(user_id))
    assert len(keys) == 2 and _pending(keys) == 0  # settled in the rows' transaction
    pending_objects.sweep(grace_seconds=0)
    assert sorted(storage.list_keys(storage.user_prefix(user_id))) == sorted(keys)
    assert _photo_rows(user_id) == 2


def test_a_pose_upload_settles_its_object_and_the_sweep_keeps_it(api: Api) -> None:
    user = api.new_user()
    r = api.post("/v1/poses", files={"file": ("pose.jpg", jpeg(astronaut_variants(1)[0]), "image/jpeg")},
                 headers=user.auth)  # fmt: skip
    assert r.status_code == 201, r.text
    pose_id = r.json()["pose"]["id"]
    with session_scope() as session:
        key = session.get(PosePhoto, uuid.UUID(pose_id)).object_key
    assert _pending([key]) == 0  # settled in the row's transaction
    ready = api.wait_job(r.json()["job"]["id"], user)
    assert ready["status"] == "succeeded", ready
    pending_objects.sweep(grace_seconds=0)  # the hourly sweep, past its grace
    assert storage.exists(key)
    shown = api.get(f"/v1/poses/{pose_id}", headers=user.auth).json()
    assert shown["status"] == "ready" and httpx.get(shown["url"], timeout=10).status_code == 200
