"""Writers that store under a user's prefix while the user's erasure runs (services/photos/erasure.py:
cancel the jobs, list and delete `users/<uid>/`, delete the row). A writer commits the row that names
its objects under the account hold (shared/accounts.py): one that finds the account being erased
deletes what it wrote, or leaves it announced for the sweep, so nothing outlives the erasure.

In-process on the real stack: the erasure runs as the photos worker runs it; the generate worker's
real `_store` runs at the moment S3 finished the erasure's delete (a hook that calls the real
`storage.delete_prefix` first), as a slow S3 lets it happen."""

import threading
import uuid

import pytest
from PIL import Image
from sqlalchemy import func, select

from services.generator import tasks as generator_tasks
from services.photos.erasure import erase_user
from shared import pending_objects, storage
from shared.contracts import GeneratePortraits
from shared.db import session_scope
from shared.jobs import JobCanceled, JobContext, run_job
from shared.models import PendingObject, User
from tests import rows


def _announced(uid: uuid.UUID) -> list[str]:
    with session_scope() as session:
        return list(
            session.scalars(select(PendingObject.key).where(PendingObject.key.startswith(f"users/{uid}/")))
        )


def test_a_portrait_stored_during_the_erasures_delete_window_is_erased_too(stack, monkeypatch) -> None:
    storage.ensure_bucket()
    uid = rows.user()
    likeness_id = rows.likeness(uid)
    job_input = {"likeness_id": "x", "styles": ["soft-beauty"], "count": 2}
    gen_id = rows.job(uid, "generate_portraits", job_input, running_on="gpu:1:x")
    erase_id = rows.job(uid, "erase_user")
    storage.put_bytes(storage.user_key(uid, "photos", "a.jpg"), b"face", "image/jpeg")

    result = rows.portrait_result()
    ctx = JobContext(gen_id, uid, "generate_portraits",
                     GeneratePortraits.model_construct(likeness_id=likeness_id), 1, 3, "gpu:1:x")  # fmt: skip
    request = {"id": likeness_id}
    listed, stored = threading.Event(), threading.Event()
    real_delete_prefix, real_thumbnail = storage.delete_prefix, generator_tasks.thumbnail_jpeg

    def slow_s3_delete_prefix(prefix: str) -> int:
        n = real_delete_prefix(prefix)
        listed.set()  # S3 still works through the delete; the GPU worker goes on meanwhile
        assert stored.wait(30)
        return n

    def erase_now(image: Image.Image) -> bytes:  # between the PNG's write and the thumbnail's
        with session_scope() as session:  # DELETE /v1/me
            session.execute(
                User.__table__.update().where(User.id == uid).values(deleting=True, deleting_since=func.now())
            )
        erasure.start()
        assert listed.wait(30)
        return real_thumbnail(image)

    erasure = threading.Thread(target=run_job, args=(erase_id, erase_user))
    monkeypatch.setattr(storage, "delete_prefix", slow_s3_delete_prefix)
    monkeypatch.setattr(generator_tasks, "thumbnail_jpeg", erase_now)
    try:
        with pytest.raises(JobCanceled):  # the account is being erased: the portrait is not kept
            generator_tasks._store(ctx, request, result)
    finally:
        stored.set()
        erasure.join(60)

    with session_scope() as session:
        assert session.get(User, uid) is None  # the erasure finished
    assert storage.list_keys(storage.user_prefix(uid)) == [], "the account is erased but its files stay"
    # Nothing for the sweep but the erasure's own second look at the prefix (which the suite's
    # platform scheduler, when one runs, may have taken already).
    assert _announced(uid) in ([f"users/{uid}/*"], [])
    pending_objects.delete_now([f"users/{uid}/*"])
    assert _announced(uid) == []
