"""`generate_portraits` (queue `generate`, GPU): `count` portraits of a likeness in each chosen
style (POST /v1/portraits). Writes `users/<uid>/portraits/<job_id>/<id>.png` and `<id>_thumb.jpg`
with one Portrait row each; mails `portraits_ready`."""

from __future__ import annotations

import uuid

from pydantic import field_validator
from pydantic_core import PydanticCustomError

from shared.contracts.base import JobInput, JobKind, JobResult

MAX_COUNT = 8  # portraits per style in one request


class GeneratePortraits(JobInput):
    """`styles`: style ids (shared/styles/*.yaml), in the order asked; `seed`: of the first
    portrait (default: from the job id, so a retried attempt draws the same); `pose_id`: the user's
    ready pose photo, whose keypoints replace each style's pose template."""

    kind = "generate_portraits"
    likeness_id: uuid.UUID
    styles: list[str]
    count: int = 1
    seed: int | None = None
    pose_id: uuid.UUID | None = None

    @field_validator("styles")
    @classmethod
    def _some_styles(cls, styles: list[str]) -> list[str]:
        if not styles:
            raise PydanticCustomError("no_styles", "Choose at least one style.")
        return styles

    @field_validator("count")
    @classmethod
    def _count_in_range(cls, count: int) -> int:
        if not 1 <= count <= MAX_COUNT:
            raise PydanticCustomError(
                "bad_count", "Ask for 1 to {max} portraits per style.", {"max": MAX_COUNT}
            )
        return count


class PortraitsMade(JobResult):
    portraits: int
    styles: list[str]
    seed: int
    ids: list[uuid.UUID]
    seconds: dict[str, float] = {}  # wall seconds per stage (shared/contracts/stages.py), for benches


KIND = JobKind(
    GeneratePortraits.kind,
    "generate.portraits",
    "generate",
    GeneratePortraits,
    PortraitsMade,
    mail_on_failure=True,
    retry_base_seconds=10,  # GPU work: a retry costs a model load
    retry_max_seconds=300,
    promises=(
        "users/<uid>/portraits/<job_id>/<id>.png",
        "users/<uid>/portraits/<job_id>/<id>_thumb.jpg",
        "mail `portraits_ready`",
    ),
)
