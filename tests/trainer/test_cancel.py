"""Stopping a training the user no longer wants, on the real stack with a `train` worker (tiny
preset): canceling its job, or deleting the likeness mid-training. The worker stops, nothing more is
stored, the checkpoints are removed, and no "ready" (or "failed") mail is sent. A canceled likeness
is `canceled`, not `failed`: the user did nothing wrong, and may start again on the same photos."""

import time

import pytest

from shared import storage
from tests.conftest import Api, Processes, wait_until
from tests.trainer.test_service import (
    TRAIN_WORKER_ENV,
    at_first_checkpoint,
    job_row,
    likeness_row,
    mail_jobs,
    start,
    upload_accepted,
    user_id,
)


def _stopped(worker, job_id: str) -> bool:
    """The worker's runner logged that this attempt ended on a cancel."""
    with open(worker.log_path, encoding="utf-8", errors="replace") as log:
        return f"job {job_id} canceled during attempt 1" in log.read()


def _left_nothing(worker, uid: str, likeness_id: str, job_id: str) -> None:
    wait_until(lambda: _stopped(worker, job_id), timeout=60, what="the worker to stop the training")
    prefix = storage.user_key(uid, "likenesses", likeness_id) + "/"
    time.sleep(2)  # a worker that went on would store its next checkpoint or the LoRA by now
    assert storage.list_keys(prefix) == []  # checkpoints removed, nothing stored after
    assert mail_jobs(uid, "training_finished") == []
    assert mail_jobs(uid, "job_failed") == []
    assert worker.poll() is None  # the worker itself lives on for the next job


@pytest.mark.slow  # ~60-90 s: a train worker start and two trainings up to their first checkpoint
def test_cancel_or_delete_mid_training_stops_the_worker_and_leaves_nothing(
    api: Api, procs: Processes
) -> None:
    worker = procs.worker("train", **TRAIN_WORKER_ENV)

    user, uid, likeness_id, job_id = at_first_checkpoint(api)
    r = api.post(f"/v1/jobs/{job_id}/cancel", headers=user.auth)
    assert r.status_code == 200 and r.json()["status"] == "canceled"
    _left_nothing(worker, uid, likeness_id, job_id)
    assert api.get(f"/v1/likenesses/{likeness_id}", headers=user.auth).json()["status"] == "canceled"
    assert job_row(job_id).status == "canceled"

    user, uid, likeness_id, job_id = at_first_checkpoint(api)
    assert api.delete(f"/v1/likenesses/{likeness_id}", headers=user.auth).status_code == 204
    _left_nothing(worker, uid, likeness_id, job_id)
    assert api.get(f"/v1/likenesses/{likeness_id}", headers=user.auth).status_code == 404
    assert job_row(job_id).status == "canceled"


def test_a_canceled_training_is_canceled_not_failed_and_can_start_again(api: Api) -> None:
    """Canceled while queued (no `train` worker runs here): the likeness says `canceled` at once,
    carries no error, the photos stay, no mail is sent, and the same photos train again."""
    user = api.new_user()
    uid = user_id(api, user)
    photo_ids = upload_accepted(api, user, 8)
    body = start(api, user).json()
    likeness_id, job_id = body["likeness"]["id"], body["job"]["id"]

    canceled = api.post(f"/v1/jobs/{job_id}/cancel", headers=user.auth).json()
    assert canceled["status"] == "canceled"
    assert canceled["error_code"] is None and canceled["error_message"] is None
    assert likeness_row(likeness_id).status == "canceled"  # stored at once, not only when read
    likeness = api.get(f"/v1/likenesses/{likeness_id}", headers=user.auth).json()
    assert likeness["status"] == "canceled"
    assert "error_code" not in (likeness_row(likeness_id).meta or {})
    listed = api.get("/v1/likenesses", headers=user.auth).json()["likenesses"]
    assert [lk["status"] for lk in listed] == ["canceled"]
    photos = api.get("/v1/photos", headers=user.auth).json()["photos"]
    assert sorted(p["id"] for p in photos if p["status"] == "accepted") == sorted(photo_ids)

    again = start(api, user)
    assert again.status_code == 202, again.text
    assert again.json()["likeness"]["status"] == "training"
    new_id = again.json()["likeness"]["id"]
    assert sorted(likeness_row(new_id).photo_ids) == sorted(photo_ids)  # the same photos
    time.sleep(1)  # a mail would be in the outbox by now
    assert mail_jobs(uid, "job_failed") == [] and mail_jobs(uid, "training_finished") == []
