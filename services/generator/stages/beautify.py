"""Stage 3, "beautify": img2img with its own tone-and-colour prompt at a moderate denoise."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image

from services.generator.prompts import PromptEmbeds
from services.generator.stages.common import (
    DerivedPipe,
    batched,
    check_seeds,
    generators,
    img2img_steps,
    repeat_embeds,
)
from shared.styles import BeautifyParams


class BeautifyStage:
    def __init__(self, base, sampler: str = "DPM++ 2M Karras", batch_size: int = 4):
        from diffusers import StableDiffusionImg2ImgPipeline

        self.base = base
        self.sampler = sampler
        self.batch_size = batch_size
        self.derived = DerivedPipe(StableDiffusionImg2ImgPipeline, base)

    def __call__(
        self,
        images: Sequence[Image.Image],
        embeds: PromptEmbeds,
        params: BeautifyParams,
        seeds: Sequence[int],
    ) -> list[Image.Image]:
        check_seeds(images, seeds)
        pipe = self.derived(self.sampler)
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
