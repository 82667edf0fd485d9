"""Stage 1: txt2img from the prompt (base + LoRAs already active) under the OpenPose ControlNet."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image

from services.generator.prompts import PromptEmbeds
from services.generator.stages.common import (
    DerivedPipe,
    batched,
    generators,
    repeat_embeds,
    size_multiple,
)
from shared.styles import Txt2ImgParams


class Txt2ImgStage:
    def __init__(self, base, controlnet=None, batch_size: int = 4):
        from diffusers import StableDiffusionControlNetPipeline, StableDiffusionPipeline

        self.base = base
        self.batch_size = batch_size
        self.plain = DerivedPipe(StableDiffusionPipeline, base)
        self.posed = (
            DerivedPipe(StableDiffusionControlNetPipeline, base, controlnet=controlnet)
            if controlnet is not None
            else None
        )

    def _pipe(self, sampler: str, with_pose: bool):
        if not with_pose:
            return self.plain(sampler)
        if self.posed is None:
            raise ValueError("a pose image needs the OpenPose ControlNet")
        return self.posed(sampler)

    def __call__(
        self,
        embeds: PromptEmbeds,
        params: Txt2ImgParams,
        seeds: Sequence[int],
        pose_image: Image.Image | None = None,
    ) -> list[Image.Image]:
        multiple = size_multiple(self.base)
        if params.width % multiple or params.height % multiple:
            raise ValueError(f"size {params.width}x{params.height} must be a multiple of {multiple}")
        pipe = self._pipe(params.sampler, pose_image is not None)
        extra = {}
        if pose_image is not None:
            extra["image"] = pose_image.convert("RGB").resize((params.width, params.height))
            extra["controlnet_conditioning_scale"] = params.controlnet_scale
        images: list[Image.Image] = []
        for chunk in batched(list(seeds), self.batch_size):
            out = pipe(
                **repeat_embeds(embeds, len(chunk)),
                width=params.width,
                height=params.height,
                num_inference_steps=params.steps,
                guidance_scale=params.cfg,
                generator=generators(chunk),
                **extra,
            )
            images.extend(out.images)
        return images
