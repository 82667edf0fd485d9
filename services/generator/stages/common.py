"""Helpers every stage uses: derived pipelines, seeded generators, batching (samplers by A1111
name: shared/ml/samplers.py)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence, Sized
from typing import TypeVar

import torch

from services.generator.prompts import PromptEmbeds
from shared.ml.samplers import make_scheduler

T = TypeVar("T")


class DerivedPipe:
    """A diffusers pipeline of `cls` over the base's components (`from_pipe`), built at once and
    kept: its modules are the base's own, so the job's LoRAs and fused or compiled modules act in
    it too. Each use gets a fresh scheduler of the sampler (schedulers hold state)."""

    def __init__(self, cls, base, **components):
        # from_pipe's dtype defaults to float32 and it calls `.to(dtype)` on the modules it shares
        # with the base: without the base's dtype it would turn the resident models to fp32.
        self.base = base
        self.pipe = cls.from_pipe(base, dtype=base.dtype, **components)
        # from_pipe does not carry the progress-bar setting over (the base has it off).
        self.pipe.set_progress_bar_config(**getattr(base, "_progress_bar_config", {}))

    def __call__(self, sampler: str):
        self.pipe.scheduler = make_scheduler(sampler, self.base.scheduler.config)
        return self.pipe


def check_seeds(images: Sized, seeds: Sized) -> None:
    if len(images) != len(seeds):
        raise ValueError("one seed per image")


def generators(seeds: Sequence[int]) -> list[torch.Generator]:
    # CPU generators: the same seed gives the same noise on every device.
    return [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]


def repeat_embeds(embeds: PromptEmbeds, n: int) -> dict[str, torch.Tensor]:
    return {
        "prompt_embeds": embeds.prompt_embeds.repeat(n, 1, 1),
        "negative_prompt_embeds": embeds.negative_prompt_embeds.repeat(n, 1, 1),
    }


def img2img_steps(steps: int, strength: float) -> int:
    """Enough steps that `strength` leaves at least one denoising step (A1111 runs
    steps * strength steps in img2img; diffusers refuses zero)."""
    if strength <= 0:
        raise ValueError("denoising strength must be > 0")
    return max(steps, math.ceil(1 / strength))


def batched(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def size_multiple(pipe) -> int:
    """Pixel sizes must be multiples of this: VAE factor x the UNet's down-sampling."""
    return pipe.vae_scale_factor * 2 ** (len(pipe.unet.config.block_out_channels) - 1)
