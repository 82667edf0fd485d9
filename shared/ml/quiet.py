"""What the model libraries print that is noise in a worker's log: progress bars, empty warnings."""

from __future__ import annotations

import logging


def quiet_model_logs() -> None:
    """Turn off diffusers' and transformers' bars ("Loading pipeline components", "Loading
    weights", "Writing model shards"): in a worker they reach stderr, which Celery logs, a bar per
    model load or save. (Downloads, `studio models pull`, keep huggingface_hub's own bars.) Drops
    the WARNINGs of `_EXPECTED` too. Idempotent."""
    import diffusers.utils.logging
    import transformers.utils.logging

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    for name, drop in _EXPECTED.items():
        logger = logging.getLogger(name)
        if drop not in logger.filters:
            logger.addFilter(drop)


class _Drop(logging.Filter):
    """Drops the records of one logger whose message has `fragment`."""

    def __init__(self, fragment: str) -> None:
        super().__init__()
        self.fragment = fragment

    def filter(self, record: logging.LogRecord) -> bool:
        return self.fragment not in record.getMessage()


# WARNINGs of diffusers 0.42 that say nothing in this product, each a line per network or LoRA per job:
# `ModelMixin.to(dtype)` lists the modules to keep in float32 even when there are none; a UNet-only
# style LoRA (most are) has no text-encoder keys, which the loader warns of at every load.
_EXPECTED = {
    "diffusers.models.modeling_utils": _Drop("should be kept in float32: []"),
    "diffusers.loaders.lora_base": _Drop("No LoRA keys associated to CLIPTextModel"),
}
