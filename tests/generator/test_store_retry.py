"""A retried generate attempt finds the portraits an earlier attempt stored and writes nothing for
them: announcing their keys again (shared/pending_objects.py) would hand the objects of committed
rows to the sweep if this attempt died before its own insert. Real `_store`, real Postgres and S3
(behind tests/s3_faults.FaultyS3, failing every PUT, for the retry)."""

import io
import os
import uuid
from types import SimpleNamespace

from PIL import Image
from sqlalchemy import func, select

from services.generator import tasks as generator_tasks
from shared import storage
from shared.contracts import GeneratePortraits
from shared.db import session_scope
from shared.jobs import JobContext
from shared.models import Job, JobStatus, Likeness, PendingObject, Portrait, User
from tests.s3_faults import FaultyS3, storage_through


def test_a_retry_does_not_write_or_announce_a_portrait_already_stored(stack) -> None:
    storage.ensure_bucket()
    uid = uuid.uuid4()
    with session_scope() as session:
        session.add(
            User(id=uid, email=f"{uid.hex}@example.com", password_hash="x", face_consent_at=func.now())
        )
        session.flush()
        likeness = Likeness(
            user_id=uid, status="ready", class_word="woman", trigger_word="ohwx", base_model="b"
        )
        session.add(likeness)
        job = Job(
            kind="generate_portraits", user_id=uid, status=JobStatus.running, worker="gpu:1:x",
            input={"likeness_id": "x", "styles": ["soft-beauty"], "count": 1}, heartbeat_at=func.now(),
        )  # fmt: skip
        session.add(job)
        session.flush()
        likeness_id, job_id = likeness.id, job.id
    image = Image.new("RGB", (64, 64), (200, 120, 90))
    png = io.BytesIO()
    image.save(png, format="PNG")
    result = SimpleNamespace(  # what the pipeline hands `_store`: one portrait
        style="soft-beauty", seed=7, png=png.getvalue(), image=image, width=64, height=64,
        identity_score=0.9, face_found=True, meta={},
    )  # fmt: skip
    ctx = JobContext(job_id, uid, "generate_portraits",
                     GeneratePortraits.model_construct(likeness_id=likeness_id), 1, 3, "gpu:1:x")  # fmt: skip
    first = generator_tasks._store(ctx, {"id": likeness_id}, result)

    with (
        FaultyS3(os.environ["S3_ENDPOINT_URL"]) as s3,
        storage_through(s3.url),
        s3.failing_puts(503, "SlowDown"),
    ):
        again = generator_tasks._store(ctx, {"id": likeness_id}, result)  # the retry, same seed
        assert s3.puts_failed == 0  # it wrote nothing
    assert again == first
    with session_scope() as session:
        portrait = session.get(Portrait, uuid.UUID(first))
        assert portrait is not None
        keys = [portrait.object_key, portrait.thumb_key]
        announced = session.scalars(select(PendingObject.key).where(PendingObject.key.in_(keys))).all()
    assert announced == [] and all(storage.exists(k) for k in keys)
