"""A retried generate attempt finds the portraits an earlier attempt stored and writes nothing for
them: announcing their keys again (shared/pending_objects.py) would hand the objects of committed
rows to the sweep if this attempt died before its own insert. Real `_store`, real Postgres and S3
(behind tests/s3_faults.FaultyS3, failing every PUT, for the retry)."""

import os
import uuid

from sqlalchemy import select

from services.generator import tasks as generator_tasks
from shared import storage
from shared.contracts import GeneratePortraits
from shared.db import session_scope
from shared.jobs import JobContext
from shared.models import PendingObject, Portrait
from tests import rows
from tests.s3_faults import FaultyS3, storage_through


def test_a_retry_does_not_write_or_announce_a_portrait_already_stored(stack) -> None:
    storage.ensure_bucket()
    uid = rows.user()
    likeness_id = rows.likeness(uid)
    job_input = {"likeness_id": "x", "styles": ["soft-beauty"], "count": 1}
    job_id = rows.job(uid, "generate_portraits", job_input, running_on="gpu:1:x")
    result = rows.portrait_result()
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
