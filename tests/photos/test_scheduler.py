"""The scheduler's retention sweep: once an hour through the job system, whatever the number of
scheduler replicas; it deletes photos older than the retention period, and keeps recent ones."""

import time
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select, update

from shared import storage
from shared.db import session_scope
from shared.models import Job, Photo
from tests.conftest import Api, Processes, wait_until
from tests.pictures import astronaut_variants, jpeg


def _sweeps() -> list[Job]:
    with session_scope() as session:
        jobs = session.scalars(select(Job).where(Job.kind == "retention_sweep")).all()
        session.expunge_all()
        return list(jobs)


def test_one_sweep_an_hour_across_replicas_deletes_only_old_photos(api: Api, procs: Processes) -> None:
    user = api.new_user()
    files = [("files", (f"me{i}.jpg", jpeg(im), "image/jpeg")) for i, im in enumerate(astronaut_variants(2))]
    up = api.post("/v1/photos", files=files, headers=user.auth).json()
    api.wait_job(up["job"]["id"], user)
    old, recent = (uuid.UUID(p["id"]) for p in up["photos"])
    keys = {}
    with session_scope() as session:
        for photo_id in (old, recent):
            keys[photo_id] = (session.get(Photo, photo_id).object_key,)
        session.execute(
            update(Photo).where(Photo.id == old).values(created_at=datetime.now(UTC) - timedelta(days=31))
        )
        # The platform's scheduler swept this hour already (and remembers it): start the hour afresh.
        session.execute(delete(Job).where(Job.kind == "retention_sweep"))

    for i in range(2):  # two replicas, as a deployment may run
        procs.start(f"scheduler-{i}", "scheduler")
    swept = wait_until(
        lambda: [j for j in _sweeps() if j.status == "succeeded"] or None, timeout=60, what="a finished sweep"
    )
    assert swept[0].result["photos_deleted"] >= 1
    assert swept[0].user_id is None and swept[0].attempts == 1
    assert not any(storage.exists(key) for key in keys[old])
    assert all(storage.exists(key) for key in keys[recent])
    assert api.get(f"/v1/photos/{old}", headers=user.auth).status_code == 404
    assert api.get(f"/v1/photos/{recent}", headers=user.auth).status_code == 200

    # Both replicas have run several passes (REAPER_INTERVAL_SECONDS 0.5): still one sweep an hour.
    wait_until(lambda: all(_logged_passes(p) for p in procs.running), timeout=30, what="replica passes")
    time.sleep(2)
    per_hour = Counter(j.created_at.astimezone(UTC).strftime("%Y-%m-%dT%H") for j in _sweeps())
    assert set(per_hour.values()) == {1}, per_hour  # (two entries if the test crossed an hour)


def _logged_passes(proc) -> bool:
    with open(proc.log_path, encoding="utf-8", errors="replace") as log:
        return "scheduler started" in log.read()
