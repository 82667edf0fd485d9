"""SD-1.5's architecture with random weights (fixed seed), for the GPU benchmarks.

A step costs the same whatever the weights, so the seconds are real although the images are
noise: UNet 860M, VAE 84M, CLIP ViT-L text encoder 123M, SD-1.5's scheduler and tokenizer.
"""

from __future__ import annotations

import torch

from shared.ml import tiny


def sd15_components(device: str) -> dict:
    """The components of a StableDiffusionPipeline, built on `device`."""
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    with torch.device(device):
        unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
        vae = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=2,
            latent_channels=4,
            sample_size=512,
        )
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
                projection_dim=768, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
            )
        )  # fmt: skip
    scheduler = PNDMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        num_train_timesteps=1000, skip_prk_steps=True, set_alpha_to_one=False, steps_offset=1,
    )  # fmt: skip
    return {
        "unet": unet,
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tiny.clip_tokenizer(),
        "scheduler": scheduler,
    }


def pipeline(components: dict, device: str, dtype: torch.dtype):
    """A StableDiffusionPipeline of `components` (these or tiny.build_components()), no safety checker."""
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        **components, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    return pipe.to(device, dtype)
