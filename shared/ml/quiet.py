"""What the model libraries print that is noise in a worker's log: progress bars, empty warnings."""

from __future__ import annotations

import logging


def quiet_model_logs() -> None:
    """Turn off diffusers' and transformers' bars ("Loading pipeline components", "Loading
    weights", "Writing model shards"): in a worker they reach stderr, which Celery logs, a bar per
    model load or save. (Downloads, `studio models pull`, keep huggingface_hub's own bars.) Drops
    diffusers' empty float32 warning too (`_empty_fp32_warning`). Idempotent."""
    import diffusers.utils.logging
    import transformers.utils.logging

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    modeling = logging.getLogger("diffusers.models.modeling_utils")
    if _empty_fp32_warning not in modeling.filters:
        modeling.addFilter(_empty_fp32_warning)


def _empty_fp32_warning(record: logging.LogRecord) -> bool:
    """False for diffusers' "There are modules in X that should be kept in float32: []" (0.42), which
    `ModelMixin.to(dtype)` logs at WARNING even when the list is empty: a line per network per job."""
    return "should be kept in float32: []" not in record.getMessage()
