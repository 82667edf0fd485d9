"""`train_likeness` (queue `train`, GPU): a likeness LoRA from the photos chosen when it was asked
for (POST /v1/likenesses). Writes the files of shared/contracts/likeness_files.py and records them
on the Likeness row; mails `training_finished`."""

from __future__ import annotations

import uuid

from shared.contracts.base import JobInput, JobKind, JobResult
from shared.contracts.likeness_files import DIFFUSERS_DIR, DIFFUSERS_FILE, EMBEDDINGS_FILE


class TrainLikeness(JobInput):
    kind = "train_likeness"
    likeness_id: uuid.UUID  # the Likeness row (photos, class word) the gateway created with the job
    fingerprint: str | None = None  # of the request (Idempotency-Key replays)


class LikenessTrained(JobResult):
    likeness_id: uuid.UUID
    steps: int
    best_step: int | None = None
    resumed_from_step: int | None = None
    photos_used: int
    seconds: dict[str, float] = {}  # where the job's time went (bench/gpu_e2e.py journey)


KIND = JobKind(
    TrainLikeness.kind,
    "train.likeness",
    "train",
    TrainLikeness,
    LikenessTrained,
    mail_on_failure=True,
    retry_base_seconds=10,  # GPU work: a retry costs a model load
    retry_max_seconds=300,
    promises=(
        f"users/<uid>/likenesses/<id>/{DIFFUSERS_DIR}/{DIFFUSERS_FILE}",
        "users/<uid>/likenesses/<id>/<name>.safetensors (kohya)",
        f"users/<uid>/likenesses/<id>/{EMBEDDINGS_FILE}",
        "mail `training_finished`",
    ),
)
