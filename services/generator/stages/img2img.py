"""Stage 3, "beautify": img2img with its own tone-and-colour prompt at a moderate denoise."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image

from services.generator.prompts import PromptEmbeds
from services.generator.stages.common import (
    batched,
    generators,
    img2img_steps,
    make_scheduler,
    repeat_embeds,
)
from services.generator.styles import BeautifyParams


class BeautifyStage:
    def __init__(self, base, sampler: str = "DPM++ 2M Karras", batch_size: int = 4):
        self.base = base
        self.sampler = sampler
        self.batch_size = batch_size

    def __call__(
        self,
        images: Sequence[Image.Image],
        embeds: PromptEmbeds,
        params: BeautifyParams,
        seeds: Sequence[int],
    ) -> list[Image.Image]:
        from diffusers import StableDiffusionImg2ImgPipeline

        if len(images) != len(seeds):
            raise ValueError("one seed per image")
        pipe = StableDiffusionImg2ImgPipeline.from_pipe(
            self.base, scheduler=make_scheduler(self.sampler, self.base.scheduler.config)
        )
        out: list[Image.Image] = []
        pairs = list(zip(images, seeds, strict=True))
        for chunk in batched(pairs, self.batch_size):
            result = pipe(
                **repeat_embeds(embeds, len(chunk)),
                image=[im.convert("RGB") for im, _ in chunk],
                strength=params.denoise,
                num_inference_steps=img2img_steps(params.steps, params.denoise),
                guidance_scale=params.cfg,
                generator=generators([s for _, s in chunk]),
            )
            out.extend(result.images)
        return out
