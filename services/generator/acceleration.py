"""GPU speed-ups of the resident models that keep their results (see FIELD_NOTES' timings):
channels_last memory format and fused QKV projections. Compiling is services/generator/compiled.py
(static shape buckets; compiling the whole pipeline with dynamic shapes never finished, issue 21).
Fused projections need `lora_mode="baked"` in PortraitPipeline (LoRAs fused in place, never new
modules). GroupNorms that keep channels_last (`shared/ml/channels_last_norm.py`) are a bench
experiment, not applied here (`bench/generate_bench.py --phases vae-norms`)."""

from __future__ import annotations

import torch

from services.generator.resident import ResidentModels


def accelerate(
    models: ResidentModels,
    *,
    channels_last: bool = True,
    fuse_qkv: bool = True,
) -> ResidentModels:
    """Apply the speed-ups in place to the UNet, the ControlNets, the VAE and ESRGAN; returns
    `models`."""
    nets = [models.base.unet, models.controlnet_openpose, models.controlnet_tile]
    nets = [n for n in nets if n is not None]
    if channels_last:
        # ESRGAN too: its 23 RRDB blocks of 3x3 convolutions are the upscale stage's largest cost,
        # and cuDNN converts NCHW half tensors to NHWC around each one (nchwToNhwcKernel, 10-14%
        # of GPU time in the 2026-12 profiles).
        upscaler = getattr(models.upscaler, "model", None)
        for net in [*nets, models.base.vae, upscaler]:
            if net is not None:
                net.to(memory_format=torch.channels_last)
    if fuse_qkv:
        for net in nets:
            net.fuse_qkv_projections()
    return models
