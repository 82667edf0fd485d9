"""The trainer's writes while the user's account is erased, on the real stack (Postgres, S3): the
LoRA files (`_store_likeness`) and the checkpoints (`S3CheckpointStore.save`). They are announced
before they are written and settled only under the account hold (shared/accounts.py), so an erasure
that listed the user's files before a write, an S3 that then fails the trainer's own clean-up, or a
worker killed in between leave nothing behind once the sweep ran."""

import uuid
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from sqlalchemy import func, select

from services.photos.erasure import erase_user
from services.trainer import tasks as trainer_tasks
from services.trainer.checkpoints import S3CheckpointStore
from services.trainer.export import ExportedLora
from services.trainer.train import LikenessResult
from shared import pending_objects, storage
from shared.db import session_scope
from shared.jobs import JobCanceled, run_job
from shared.models import PendingObject, User
from tests import rows
from tests.s3_faults import storage_through


def _user_training() -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    """A user with a likeness in training and a queued erasure: (user, likeness, erase job)."""
    uid = rows.user()
    return uid, rows.likeness(uid, "training"), rows.job(uid, "erase_user")


def _erase(uid: uuid.UUID, erase_id: uuid.UUID) -> None:
    """DELETE /v1/me, then the erasure job to its end (as the photos worker runs it)."""
    with session_scope() as session:
        session.execute(
            User.__table__.update().where(User.id == uid).values(deleting=True, deleting_since=func.now())
        )
    run_job(erase_id, erase_user)
    with session_scope() as session:
        assert session.get(User, uid) is None


def _announced(uid: uuid.UUID) -> set[str]:
    with session_scope() as session:
        keys = session.scalars(select(PendingObject.key).where(PendingObject.key.startswith(f"users/{uid}/")))
        return set(keys)


def _s3_down() -> AbstractContextManager[None]:
    """This process's S3 client talks to a port nobody listens on (connection refused)."""
    return storage_through("http://127.0.0.1:9")


def _result(folder: Path) -> LikenessResult:
    """A trained likeness as the library hands it over: its files on disk."""
    diffusers = folder / "diffusers"
    diffusers.mkdir()
    (diffusers / "pytorch_lora_weights.safetensors").write_bytes(b"lora weights of a face")
    kohya = folder / "ohwx.safetensors"
    kohya.write_bytes(b"kohya lora of a face")
    embeddings = folder / "embeddings.npy"
    embeddings.write_bytes(b"128-d face embeddings")
    return LikenessResult(
        trigger_word="ohwx", class_word="woman", caption="a photo of ohwx woman", preset="tiny",
        base_model="b", lora=ExportedLora(diffusers, kohya, {}), embeddings_path=embeddings, steps=4,
        best_step=4, scores=[], selection_note="", verdicts=[], losses=[], resumed_from=None,
    )  # fmt: skip


def test_an_erasure_during_the_lora_upload_and_an_s3_outage_leave_nothing_after_the_sweep(
    stack, monkeypatch, tmp_path
) -> None:
    storage.ensure_bucket()
    uid, likeness_id, erase_id = _user_training()
    result = _result(tmp_path)
    real_put = storage.put_bytes
    outage = _s3_down()

    def put_then(key: str, data: bytes, content_type: str) -> None:
        real_put(key, data, content_type)
        if key.endswith("/pytorch_lora_weights.safetensors"):
            _erase(uid, erase_id)  # the user erases the account while the files upload
        if key.endswith("/embeddings.npy"):
            outage.__enter__()  # and S3 fails the trainer's clean-up

    monkeypatch.setattr(storage, "put_bytes", put_then)
    try:
        found = trainer_tasks._store_likeness(uid, likeness_id, result)
    finally:
        outage.__exit__(None, None, None)

    assert found is None  # the likeness went with the account: nothing is marked ready
    left = set(storage.list_keys(storage.user_prefix(uid)))
    prefix = f"users/{uid}/likenesses/{likeness_id}/"
    # written after the listing (the suite's platform scheduler, when one runs, may have deleted
    # them already through the erasure's second look at the prefix)
    assert left <= {f"{prefix}ohwx.safetensors", f"{prefix}embeddings.npy"}
    assert left <= _announced(uid)  # so the sweep deletes them
    pending_objects.delete_now(sorted(_announced(uid)))  # what the sweep does to this user's keys
    assert storage.list_keys(storage.user_prefix(uid)) == []
    assert _announced(uid) == set()


def test_a_killed_upload_leaves_its_files_announced(stack, tmp_path) -> None:
    storage.ensure_bucket()
    uid, likeness_id, _ = _user_training()
    trainer_tasks._upload(uid, likeness_id, _result(tmp_path))  # the worker dies before the row
    written = set(storage.list_keys(storage.user_prefix(uid)))
    assert len(written) == 3 and written <= _announced(uid)


def test_checkpoints_are_settled_only_while_the_account_stands(stack) -> None:
    storage.ensure_bucket()
    uid, likeness_id, erase_id = _user_training()
    store = S3CheckpointStore(uid, likeness_id)
    store.save(1, b"step one")
    assert list(store.steps()) == [1] and _announced(uid) == set()  # reachable through the likeness

    _erase(uid, erase_id)
    with pytest.raises(JobCanceled):  # a training that saves after the erasure listed the folder
        store.save(2, b"step two")
    assert store.steps() == {} and _announced(uid) <= {f"users/{uid}/*"}  # only the erasure's own
