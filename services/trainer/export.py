"""Save a trained likeness LoRA for diffusers and for A1111/ComfyUI (kohya format), with metadata
as kohya sd-scripts writes it (ss_*, sshs_* hashes, modelspec.*)."""

from __future__ import annotations

import datetime
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from shared.contracts.likeness_files import DIFFUSERS_FILE

__all__ = ["DIFFUSERS_FILE", "ExportedLora", "export_lora", "lora_metadata"]


@dataclass(frozen=True)
class ExportedLora:
    diffusers_path: Path  # a folder with pytorch_lora_weights.safetensors (load_lora_weights)
    kohya_path: Path  # one .safetensors for AUTOMATIC1111 / ComfyUI
    metadata: dict[str, str]


def lora_metadata(
    *,
    base_model: str,
    base_model_sha256: str | None,
    rank: int,
    alpha: float,
    steps: int,
    trigger_word: str,
    class_word: str,
    scores: list[dict] | None,
    best_step: int | None,
    output_name: str | None = None,
    sd_model_name: str | None = None,
    resolution: int = 512,
    num_train_images: int | None = None,
    clip_skip: int | None = None,
    trained_at: datetime.datetime | None = None,
) -> dict[str, str]:
    """safetensors metadata: strings only. `ss_*` are the keys kohya sd-scripts writes
    (train_network.py) and A1111, its Lora extension, civitai and ComfyUI read: `ss_output_name`
    (A1111's alias for the `<lora:...>` tag; the file stem), `ss_sd_model_name` (the base
    checkpoint's file name), `ss_resolution` "(512, 512)", `ss_clip_skip` ("None": the last
    layer, as sd-scripts writes an unset option). `modelspec.*` is Stability AI's model spec as
    sd-scripts' library/sai_model_spec.py builds it for an SD-1 LoRA. The `sshs_*` hashes are
    added by export_lora, once the tensors are final."""
    trained_at = trained_at or datetime.datetime.now(datetime.UTC)
    metadata = {
        "studio_base_model": base_model,
        "studio_base_model_sha256": base_model_sha256 or "",
        "studio_trigger_word": trigger_word,
        "studio_class_word": class_word,
        "studio_steps": str(steps),
        "studio_best_step": "" if best_step is None else str(best_step),
        "studio_scores": json.dumps(scores or []),
        "ss_network_module": "networks.lora",
        "ss_network_dim": str(rank),
        "ss_network_alpha": str(alpha),
        "ss_base_model_version": "sd_v1",
        "ss_v2": "False",
        "ss_max_train_steps": str(steps),
        "ss_steps": str(steps),
        "ss_resolution": f"({resolution}, {resolution})",
        "ss_clip_skip": str(clip_skip),
        "ss_sd_model_name": sd_model_name or base_model,
        "ss_training_finished_at": str(trained_at.timestamp()),
        "ss_tag_frequency": json.dumps({"likeness": {f"{trigger_word} {class_word}": 1}}),
        # Stability AI model spec 1.0.1 (sd-scripts: sai_model_spec.build_metadata, lora=True)
        "modelspec.sai_model_spec": "1.0.1",
        "modelspec.architecture": "stable-diffusion-v1/lora",
        "modelspec.implementation": "diffusers",
        "modelspec.title": output_name or f"likeness-{trigger_word}",
        "modelspec.resolution": f"{resolution}x{resolution}",
        "modelspec.date": trained_at.replace(microsecond=0).isoformat(),
        "modelspec.prediction_type": "epsilon",
        "modelspec.trigger_phrase": f"{trigger_word} {class_word}",
        "modelspec.usage_hint": f"Write '{trigger_word} {class_word}' in the prompt",
    }
    if output_name:
        metadata["ss_output_name"] = output_name
    if num_train_images is not None:
        metadata["ss_num_train_images"] = str(num_train_images)
    if base_model_sha256:
        metadata["ss_new_sd_model_hash"] = base_model_sha256
    if clip_skip is not None:
        metadata["modelspec.encoder_layer"] = str(clip_skip)
    return metadata


def addnet_hash_safetensors(data: bytes) -> str:
    """sha256 (hex) of a safetensors file's bytes after its header: the "new" hash of
    sd-webui-additional-networks, which A1111 uses for LoRAs (modules/hashes.py
    addnet_hash_safetensors; its first 12 hex are the `Lora hashes` entry). Independent of the
    metadata, which lives in the header."""
    n = int.from_bytes(data[:8], "little")
    return hashlib.sha256(data[8 + n :]).hexdigest()


def addnet_hash_legacy(data: bytes) -> str:
    """sd-scripts' addnet_hash_legacy: sha256 of the 64 KiB at offset 1 MiB, 8 hex."""
    return hashlib.sha256(data[0x100000 : 0x100000 + 0x10000]).hexdigest()[:8]


def precalculate_safetensors_hashes(
    tensors: dict[str, torch.Tensor], metadata: dict[str, str]
) -> tuple[str, str]:
    """(sshs_model_hash, sshs_legacy_hash) as kohya sd-scripts' library/train_util.py
    precalculate_safetensors_hashes computes them: over the file serialised with only the `ss_*`
    metadata (user metadata may change later; the training metadata does not)."""
    from safetensors.torch import save

    data = save(tensors, {k: v for k, v in metadata.items() if k.startswith("ss_")})
    return addnet_hash_safetensors(data), addnet_hash_legacy(data)


def export_lora(
    state: dict[str, torch.Tensor], out_dir: Path, *, name: str, metadata: dict[str, str], alpha: float
) -> ExportedLora:
    """`state` is the peft-format state with `unet.` / `text_encoder.` prefixes (lora.lora_state),
    trained with LoRA `alpha` (scale alpha / rank). Both files render as the adapter in memory:
    the diffusers file carries the adapter's config (rank, alpha, modules) as diffusers' adapter
    metadata; the kohya file has kohya's names and `.alpha` tensors (see kohya_state)."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers

    out_dir = Path(out_dir)
    unet = {k.removeprefix("unet."): v for k, v in state.items() if k.startswith("unet.")}
    # Text-encoder keys in the transformers-4 layout (`text_model.encoder...`), which every
    # diffusers loads: older ones match it to a nested CLIPTextModel, newer ones (>= 0.36) strip
    # `text_model.` for the flat transformers-5 model. Its target modules stay suffixes that match
    # either layout (peft matches `name == t or name.endswith("." + t)`).
    text = {
        "text_model." + k.removeprefix("text_encoder.").removeprefix("text_model."): v
        for k, v in state.items()
        if k.startswith("text_encoder.")
    }
    diffusers_dir = out_dir / "diffusers"
    StableDiffusionPipeline.save_lora_weights(
        diffusers_dir,
        unet_lora_layers=convert_state_dict_to_diffusers(unet),
        text_encoder_lora_layers=convert_state_dict_to_diffusers(text) if text else None,
        unet_lora_adapter_metadata=_adapter_config(unet, alpha),
        text_encoder_lora_adapter_metadata=_adapter_config(
            {k.removeprefix("text_model."): v for k, v in text.items()}, alpha
        )
        if text
        else None,
        safe_serialization=True,
    )
    kohya_path = out_dir / f"{name}.safetensors"
    tensors = kohya_state(state, alpha)
    model_hash, legacy_hash = precalculate_safetensors_hashes(tensors, metadata)
    kohya_metadata = {**metadata, "sshs_model_hash": model_hash, "sshs_legacy_hash": legacy_hash}
    save_file(tensors, str(kohya_path), metadata=kohya_metadata)
    # The generator renders from the diffusers file; its infotext names the kohya file the user
    # downloads (`<lora:likeness-...>`, `Lora hashes`): that file's name and A1111 hash.
    _add_metadata(
        diffusers_dir / DIFFUSERS_FILE,
        {**metadata, "studio_kohya_file": kohya_path.name, "studio_kohya_sshs_model_hash": model_hash},
    )
    return ExportedLora(diffusers_dir, kohya_path, kohya_metadata)


def kohya_state(state: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """The kohya/A1111 form of a peft state: `lora_unet_<module>` and, for SD-1.x's one text
    encoder, `lora_te_text_model_<module>` (kohya sd-scripts' names: its CLIPTextModel path
    `text_model.encoder.layers.N...`, which transformers 5 no longer nests under `text_model`,
    and `lora_te_`, `lora_te1_` being SDXL's first encoder); every tensor in float16
    (sd-scripts' `--save_precision fp16`, as civitai LoRAs ship: half the download) and one
    `.alpha` per module holding the trained alpha (kohya scales by alpha / rank)."""
    from diffusers.utils import convert_state_dict_to_kohya

    out = {}
    for key, value in convert_state_dict_to_kohya({k: v.float() for k, v in state.items()}).items():
        key = key.replace("lora_te1_", "lora_te_", 1)
        if key.startswith("lora_te_") and not key.startswith("lora_te_text_model_"):
            key = "lora_te_text_model_" + key.removeprefix("lora_te_")
        if key.endswith(".alpha"):
            value = torch.tensor(float(alpha))
        out[key] = value.to(torch.float16).contiguous()
    return out


def _adapter_config(state: dict[str, torch.Tensor], alpha: float) -> dict:
    """peft's whole `LoraConfig(r, lora_alpha, target_modules).to_dict()` of a peft state, for
    diffusers' `*_lora_adapter_metadata` (without it diffusers assumes alpha == rank). All of it:
    diffusers 0.35 reads `rank_pattern` and `alpha_pattern` from it (KeyError on a subset)."""
    from peft import LoraConfig

    ranks = {v.shape[0] for k, v in state.items() if ".lora_A." in k}
    if len(ranks) != 1:
        raise ValueError(f"expected one LoRA rank, found {sorted(ranks)}")
    modules = sorted({k.split(".lora_A.")[0] for k in state if ".lora_A." in k})
    config = LoraConfig(r=ranks.pop(), lora_alpha=alpha, target_modules=modules).to_dict()
    config["target_modules"] = modules  # a sorted list, not peft's set: the same bytes each time
    return json.loads(json.dumps(config, default=str))  # enums and nested configs as JSON


def _add_metadata(path: Path, metadata: dict[str, str]) -> None:
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is no dict)
        existing = f.metadata() or {}
    save_file(tensors, str(path), metadata={**existing, **metadata})


def read_metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})
