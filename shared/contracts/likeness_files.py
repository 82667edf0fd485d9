"""The files of a trained likeness: their names on disk and where `Likeness.meta["files"]` says
they are in S3. Written by the trainer, read by the generator and the gateway's download.

Under `users/<uid>/likenesses/<likeness_id>/`:
- `diffusers/pytorch_lora_weights.safetensors` (and any other file of the diffusers folder):
  the LoRA for diffusers' `load_lora_weights`;
- `<name>.safetensors`: the same LoRA in kohya's names, for AUTOMATIC1111 / ComfyUI;
- `embeddings.npy`: (N, 128) float32 face embeddings of the training photos (identity score).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

DIFFUSERS_FILE = "pytorch_lora_weights.safetensors"  # diffusers' LoRA weights name
DIFFUSERS_DIR = "diffusers"  # the folder of the diffusers format under a likeness
EMBEDDINGS_FILE = "embeddings.npy"  # (N, 128) float32 reference face embeddings
META_FILE = "likeness.json"  # {"trigger_word", "class_word"} next to a LoRA (`studio generate`)

DownloadFormat = Literal["diffusers", "kohya"]
DOWNLOAD_NAMES: dict[str, str] = {"diffusers": DIFFUSERS_FILE}  # else the key's own name


class LikenessFiles(BaseModel):
    """`Likeness.meta["files"]`: object keys by format. `embeddings` is absent for likenesses
    trained before it was stored; `kohya` for the oldest ones."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    diffusers: str
    diffusers_files: list[str] = []
    kohya: str | None = None
    embeddings: str | None = None

    @classmethod
    def of(cls, meta: Mapping[str, Any] | None) -> LikenessFiles | None:
        """The files recorded in a likeness's `meta`; None when it has no LoRA file."""
        try:
            return cls.model_validate((meta or {}).get("files") or {})
        except ValidationError:
            return None

    def key(self, format: DownloadFormat) -> str | None:
        """The object key of one download format."""
        return self.diffusers if format == "diffusers" else self.kohya
