"""Helpers of the generator tests: small styles, random LoRAs, a fixed detector."""

from __future__ import annotations

import torch

from shared.styles import DetailerPass, Style, get_style


def small_style(style_id: str = "studio-business", steps: int = 2) -> Style:
    """A shipped style shrunk for CPU tests: 64x96 images, few steps, small crops and tiles."""
    from services.generator.pipeline import Scale, scale_style

    scale = Scale(width=64, height=96, steps=steps, detail_size=64, tile=64, padding=16)
    return scale_style(get_style(style_id), scale)


def face_pass(**update) -> DetailerPass:
    return small_style().detailer[0].model_copy(update=update)


def make_lora(base, path, seed: int = 0, rank: int = 4) -> None:
    """A random LoRA for the tiny UNet and text encoder, saved as diffusers safetensors."""
    import copy

    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig, get_peft_model_state_dict

    torch.manual_seed(seed)
    unet, text_encoder = copy.deepcopy(base.unet), copy.deepcopy(base.text_encoder)
    unet.add_adapter(
        LoraConfig(
            r=rank, lora_alpha=rank, init_lora_weights=False,
            target_modules=["to_q", "to_k", "to_v", "to_out.0"],
        )
    )  # fmt: skip
    text_encoder.add_adapter(
        LoraConfig(
            r=rank, lora_alpha=rank, init_lora_weights=False,
            target_modules=["q_proj", "k_proj", "v_proj", "out_proj"],
        )
    )  # fmt: skip
    StableDiffusionPipeline.save_lora_weights(
        str(path.parent),
        unet_lora_layers=convert_state_dict_to_diffusers(get_peft_model_state_dict(unet)),
        text_encoder_lora_layers=convert_state_dict_to_diffusers(get_peft_model_state_dict(text_encoder)),
        weight_name=path.name,
    )


class FixedDetector:
    """A detector that reports given boxes (the stage's contract, without a model)."""

    name = "fixed"

    def __init__(self, boxes):
        self.boxes = boxes

    def __call__(self, images, confidence):
        from services.generator.detectors import Detection

        return [[Detection(b, 0.9, "face") for b in self.boxes] for _ in images]
