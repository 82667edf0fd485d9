"""Save a trained likeness LoRA for diffusers and for A1111/ComfyUI (kohya format), with metadata."""

from __future__ import annotations

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
) -> dict[str, str]:
    """safetensors metadata: strings only. `ss_*` keys are the ones kohya-aware UIs display."""
    return {
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
        "ss_max_train_steps": str(steps),
        "ss_tag_frequency": json.dumps({"likeness": {f"{trigger_word} {class_word}": 1}}),
    }


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
    text = {k.removeprefix("text_encoder."): v for k, v in state.items() if k.startswith("text_encoder.")}
    diffusers_dir = out_dir / "diffusers"
    StableDiffusionPipeline.save_lora_weights(
        diffusers_dir,
        unet_lora_layers=convert_state_dict_to_diffusers(unet),
        text_encoder_lora_layers=convert_state_dict_to_diffusers(text) if text else None,
        unet_lora_adapter_metadata=_adapter_config(unet, alpha),
        text_encoder_lora_adapter_metadata=_adapter_config(text, alpha) if text else None,
        safe_serialization=True,
    )
    _add_metadata(diffusers_dir / DIFFUSERS_FILE, metadata)

    kohya_path = out_dir / f"{name}.safetensors"
    save_file(kohya_state(state, alpha), str(kohya_path), metadata=metadata)
    return ExportedLora(diffusers_dir, kohya_path, metadata)


def kohya_state(state: dict[str, torch.Tensor], alpha: float) -> dict[str, torch.Tensor]:
    """The kohya/A1111 form of a peft state: `lora_unet_<module>` and, for SD-1.x's one text
    encoder, `lora_te_text_model_<module>` (kohya sd-scripts' names: its CLIPTextModel path
    `text_model.encoder.layers.N...`, which transformers 5 no longer nests under `text_model`,
    and `lora_te_`, `lora_te1_` being SDXL's first encoder); `lora_down`/`lora_up` in fp32 and
    one `.alpha` per module holding the trained alpha (kohya scales by alpha / rank)."""
    from diffusers.utils import convert_state_dict_to_kohya

    out = {}
    for key, value in convert_state_dict_to_kohya({k: v.float() for k, v in state.items()}).items():
        key = key.replace("lora_te1_", "lora_te_", 1)
        if key.startswith("lora_te_") and not key.startswith("lora_te_text_model_"):
            key = "lora_te_text_model_" + key.removeprefix("lora_te_")
        if key.endswith(".alpha"):
            value = torch.tensor(float(alpha))
        out[key] = value.contiguous()
    return out


def _adapter_config(state: dict[str, torch.Tensor], alpha: float) -> dict:
    """peft LoraConfig arguments of a peft state, for diffusers' `*_lora_adapter_metadata`
    (without them diffusers' loader assumes alpha == rank)."""
    ranks = {v.shape[0] for k, v in state.items() if ".lora_A." in k}
    if len(ranks) != 1:
        raise ValueError(f"expected one LoRA rank, found {sorted(ranks)}")
    modules = sorted({k.split(".lora_A.")[0] for k in state if ".lora_A." in k})
    return {"r": ranks.pop(), "lora_alpha": alpha, "target_modules": modules}


def _add_metadata(path: Path, metadata: dict[str, str]) -> None:
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is no dict)
        existing = f.metadata() or {}
    save_file(tensors, str(path), metadata={**existing, **metadata})


def read_metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})
