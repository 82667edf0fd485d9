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
    channels_last_norms: bool = False,
    fuse_qkv: bool = True,
) -> ResidentModels:
    """Apply the speed-ups in place to the UNet, the ControlNets, the VAE and ESRGAN; returns
    `models`. `channels_last_norms` (CUDA only, with `channels_last`; off by default) swaps the
    VAE's GroupNorms for ones that do not copy channels_last tensors to NCHW and back: a small gain
    measured once, and a one-pass variance that loses precision where a group's mean is far above
    its spread, which nobody has checked on real VAE activations."""
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
            # The VAE only. Measured on an H200 with them in every network, eager, set of 8:
            # upscale 5.47 -> 5.07 s and beautify 1.20 -> 1.05 s (VAE-heavy stages), txt2img
            # 2.90 -> 3.30 s (UNet-heavy); bench/results/generate_h200_channels_last_norms.json.
            use_channels_last_norms(models.base.vae)
    if fuse_qkv:
        for net in nets:
            net.fuse_qkv_projections()
    return models
