"""GPU speed-ups of the resident models (see FIELD_NOTES' H100 timings): channels_last, fused
QKV projections, torch.compile (CUDA graphs with mode "reduce-overhead"). Compiled models need
`lora_mode="baked"` in PortraitPipeline (LoRAs fused in place, never new modules)."""

from __future__ import annotations

import torch

from services.generator.resident import ResidentModels


def accelerate(
    models: ResidentModels,
    *,
    channels_last: bool = True,
    fuse_qkv: bool = True,
    compile_mode: str | None = "reduce-overhead",
    dynamic: bool | None = True,
) -> ResidentModels:
    """Apply the speed-ups in place. `dynamic=True` compiles each network once for all batch
    sizes and resolutions (CUDA graphs are still recorded per shape); compiling one shape
    statically takes 85-110 s on the H100, and the pipeline uses four."""
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
    if compile_mode:
        for net in nets:
            net.compile(mode=compile_mode, dynamic=dynamic)
    return models
