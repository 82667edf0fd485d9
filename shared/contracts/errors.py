"""Error codes a job fails with (`Job.error_code`), each with its sentence in the catalogue.

The English and Korean sentences live in shared/i18n.py under `job.<code>`; a worker raises
`JobError.of(ErrorCode.likeness_deleted)` and never writes the English text itself, so one code has
one wording, in every language. A test checks that each code has both sentences.
"""

from __future__ import annotations

import enum
from typing import Any

from shared.i18n import Sentence


class ErrorCode(enum.StrEnum):
    # the likeness a job needs
    likeness_deleted = "likeness_deleted"
    likeness_not_ready = "likeness_not_ready"
    likeness_base_mismatch = "likeness_base_mismatch"
    likeness_files_missing = "likeness_files_missing"
    # the pose photo a job needs
    pose_deleted = "pose_deleted"
    pose_not_ready = "pose_not_ready"
    # a portrait request
    unknown_style = "unknown_style"
    no_styles = "no_styles"
    bad_count = "bad_count"
    daily_limit = "daily_limit"
    # a LoRA file the generator cannot apply (services/generator/lora_files.py names file and reason)
    unusable_lora = "unusable_lora"
    # the workers themselves
    worker_restarting = "worker_restarting"
    foreign_object = "foreign_object"
    bad_input = "bad_input"
    unknown_template = "unknown_template"
    # kept by the runner and the reaper (their sentences say how many attempts were made)
    internal_error = "internal_error"
    worker_lost = "worker_lost"


def sentence(code: ErrorCode, **values: Any) -> Sentence:
    """The catalogue sentence of `code` (key `job.<code>`) with its values."""
    return Sentence(f"job.{code}", values)
