"""GPU speed-ups of the resident models that keep their results (see FIELD_NOTES' timings):
channels_last memory format (the VAE's GroupNorms keep it: shared/ml/channels_last_norm.py) and
fused QKV projections. Compiling is services/generator/compiled.py
(static shape buckets; compiling the whole pipeline with dynamic shapes never finished, issue 21).
Fused projections need `lora_mode="baked"` in PortraitPipeline (LoRAs fused in place, never new
modules)."""

from __future__ import annotations

import torch

from services.generator.resident import ResidentModels
from shared.ml.channels_last_norm import use_channels_last_norms


def accelerate(
    models: ResidentModels,
    *,
    channels_last: bool = True,
    channels_last_norms: bool = True,
    fuse_qkv: bool = True,
) -> ResidentModels:
    """Apply the speed-ups in place to the UNet, the ControlNets, the VAE and ESRGAN; returns
    `models`. `channels_last_norms` (CUDA only, with `channels_last`) swaps the VAE's GroupNorms
    for ones that do not copy channels_last tensors to NCHW and back."""
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
        if channels_last_norms and next(models.base.vae.parameters()).is_cuda:
            # The VAE only: its norms over 128-512 channels at full pixel size made copies that
            # cost more than the extra reductions (upscale 5.47 -> 5.07 s, beautify 1.20 -> 1.05 s a
            # set of 8 on an H200); in the UNet the reductions cost more (txt2img 2.90 -> 3.30 s),
            # bench/results/generate_h200_channels_last_norms.json.
            use_channels_last_norms(models.base.vae)
    if fuse_qkv:
        for net in nets:
            net.fuse_qkv_projections()
    return models
