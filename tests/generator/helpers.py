"""Helpers of the generator tests: small styles, random LoRAs, a fixed detector."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from shared.styles import DetailerPass, Style, get_style

if TYPE_CHECKING:
    from services.generator.pipeline import PortraitPipeline


def small_style(style_id: str = "studio-business", steps: int = 2) -> Style:
    """A shipped style shrunk for CPU tests: 64x96 images, few steps, small crops and tiles."""
    from services.generator.pipeline import Scale, scale_style

    scale = Scale(width=64, height=96, steps=steps, detail_size=64, tile=64, padding=16)
    return scale_style(get_style(style_id), scale)


def face_pass(**update) -> DetailerPass:
    return small_style().detailer[0].model_copy(update=update)


def make_lora(base, path, seed: int = 0, rank: int = 4, alpha: float | None = None) -> None:
    """A random LoRA for the tiny UNet and text encoder, saved as diffusers safetensors. With
    `alpha`, each component's peft LoraConfig goes into the file's metadata (as the trainer's
    export writes it), so the file's scale is alpha / rank; without, diffusers takes alpha == rank."""
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig, get_peft_model_state_dict

    # New modules of the same configs, not copies: a copy of a graphed network cannot be made
    # (its forward holds CUDA graphs), and the file holds only the LoRA's own weights.
    unet = type(base.unet).from_config(base.unet.config)
    text_encoder = type(base.text_encoder)(base.text_encoder.config)
    torch.manual_seed(seed)
    configs = {
        name: LoraConfig(r=rank, lora_alpha=alpha or rank, init_lora_weights=False, target_modules=targets)
        for name, targets in (
            ("unet", ["to_q", "to_k", "to_v", "to_out.0"]),
            ("text_encoder", ["q_proj", "k_proj", "v_proj", "out_proj"]),
        )
    }
    unet.add_adapter(configs["unet"])
    text_encoder.add_adapter(configs["text_encoder"])
    metadata = {}
    if alpha is not None:
        metadata = {f"{name}_lora_adapter_metadata": config.to_dict() for name, config in configs.items()}
    StableDiffusionPipeline.save_lora_weights(
        str(path.parent),
        unet_lora_layers=convert_state_dict_to_diffusers(get_peft_model_state_dict(unet)),
        text_encoder_lora_layers=convert_state_dict_to_diffusers(get_peft_model_state_dict(text_encoder)),
        weight_name=path.name,
        **metadata,
    )


def controlnet_latents(
    pipeline: PortraitPipeline, style: Style
) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
    """A call that returns the final latents of the pipeline's two ControlNet paths: txt2img at
    64x96 under the OpenPose ControlNet (a full batch of 2, with `style`'s sampler; `style` is
    scaled to 64x96 by the caller) and a partial batch of 3 upscale tiles of 96 px under the tile
    ControlNet. The inputs (prompt embeddings, pose, tiles) are made here, once, so every call
    (eager, then compiled or graphed) sees the same ones; each call seeds its own generators."""
    from PIL import Image

    from services.generator.prompts import encode_prompt_pair

    base = pipeline.models.base
    embeds = encode_prompt_pair(base.tokenizer, base.text_encoder, "portrait photo", "blurry")
    pose = Image.new("RGB", (64, 96), (40, 80, 120))
    tiles = [Image.effect_noise((96, 96), 40 + 10 * k).convert("RGB") for k in range(3)]

    def latents() -> tuple[torch.Tensor, torch.Tensor]:
        t2i = pipeline.txt2img.posed(style.txt2img.sampler)(
            prompt_embeds=embeds.prompt_embeds.repeat(2, 1, 1),
            negative_prompt_embeds=embeds.negative_prompt_embeds.repeat(2, 1, 1),
            image=pose, width=64, height=96, num_inference_steps=2, guidance_scale=5.0,
            controlnet_conditioning_scale=0.8, output_type="latent",
            generator=[torch.Generator().manual_seed(s) for s in (1, 2)],
        ).images  # fmt: skip
        tile = pipeline.upscale.derived("DPM++ 2M Karras")(
            prompt_embeds=embeds.prompt_embeds.repeat(3, 1, 1),
            negative_prompt_embeds=embeds.negative_prompt_embeds.repeat(3, 1, 1),
            image=tiles, control_image=tiles, width=96, height=96, strength=0.5,
            num_inference_steps=4, guidance_scale=5.0, controlnet_conditioning_scale=1.0,
            output_type="latent", generator=[torch.Generator().manual_seed(s) for s in (3, 4, 5)],
        ).images  # fmt: skip
        return t2i, tile

    return latents


class FixedDetector:
    """A detector that reports given boxes (the stage's contract, without a model)."""

    name = "fixed"

    def __init__(self, boxes):
        self.boxes = boxes

    def __call__(self, images, confidence):
        from services.generator.detectors import Detection

        return [[Detection(b, 0.9, "face") for b in self.boxes] for _ in images]


# Module classes LyCORIS wraps in SD-1.x (the kohya/LoCon set: attention, resnets, resampling,
# the text encoder's attention and MLP); LyCORIS' own default also lists names that collide here.
LYCORIS_PRESET = {
    "unet_target_module": ["Transformer2DModel", "ResnetBlock2D", "Downsample2D", "Upsample2D"],
    "unet_target_name": [],
    "text_encoder_target_module": ["CLIPAttention", "CLIPSdpaAttention", "CLIPMLP"],
    "text_encoder_target_name": [],
}


def make_lycoris(base, path, algo: str, seed: int = 0, **kwargs) -> None:
    """A real LyCORIS file (`lycoris.kohya.create_network(algo=...)`: "loha", "lokr", ...) for the
    tiny UNet and text encoder, its factors random (LyCORIS starts one at zero), saved by LyCORIS'
    own `save_weights`. The text encoder is nested under `text_model` as in transformers 4, so
    the names are sd-scripts' (`lora_te_text_model_encoder_layers_N_...`), as on civitai files.
    kwargs go to create_network (e.g. use_tucker=True, factor=4, full_matrix=True)."""
    import copy

    from lycoris.config import PRESET
    from lycoris.kohya import create_network

    class TransformersFourLayout(torch.nn.Module):
        def __init__(self, text_model):
            super().__init__()
            self.text_model = text_model

    PRESET.setdefault("sd15-kohya", {"enable_conv": True, **LYCORIS_PRESET})
    unet, text_encoder = copy.deepcopy(base.unet), copy.deepcopy(base.text_encoder)
    options = {"conv_dim": 4, "conv_alpha": 2.0, "preset": "sd15-kohya", **kwargs}
    network = create_network(
        1.0, 4, 2.0, None, TransformersFourLayout(text_encoder), unet, algo=algo, **options
    )
    network.apply_to(text_encoder, unet, apply_text_encoder=True, apply_unet=True)  # as sd-scripts does
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _name, param in network.named_parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    network.save_weights(str(path), torch.float32, {"ss_network_module": "lycoris.kohya"})
