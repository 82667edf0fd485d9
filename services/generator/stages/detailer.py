"""Stages 2 and 4, the detailer (ADetailer's method).

For each pass (face, then hand): detect boxes, and for each box build a mask (dilated, blurred),
crop the mask's bounding box plus padding (grown to a square), inpaint only that crop at
`size` px with the pass's own prompt, and paste it back through the blurred mask. Pixels where
the mask is 0 are untouched, bit for bit. Crops of all images are inpainted in batches.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from PIL import Image

from services.generator.detectors import Detection, Detector
from services.generator.prompts import PromptEmbeds
from services.generator.regions import MaskedCrop, masked_crop, paste
from services.generator.stages.common import (
    DerivedPipe,
    batched,
    check_seeds,
    generators,
    img2img_steps,
    repeat_embeds,
    size_multiple,
)
from shared.styles import DetailerPass


@dataclass
class DetailReport:
    """What the detailer did to one image."""

    detections: dict[str, list[Detection]] = field(default_factory=dict)  # by detector kind
    regions: list[tuple[int, int, int, int]] = field(default_factory=list)  # crops inpainted

    def to_json(self) -> dict:
        return {
            "detections": {
                kind: [{"box": list(d.box), "score": round(d.score, 3)} for d in found]
                for kind, found in self.detections.items()
            },
            "regions": [list(r) for r in self.regions],
        }


class DetailerStage:
    def __init__(
        self,
        base,
        detectors: dict[str, Detector | None],
        sampler: str = "DPM++ 2M Karras",
        batch_size: int = 8,
    ):
        from diffusers import StableDiffusionInpaintPipeline

        self.base = base
        self.detectors = detectors
        self.sampler = sampler
        self.batch_size = batch_size
        self.derived = DerivedPipe(StableDiffusionInpaintPipeline, base)

    def __call__(
        self,
        images: Sequence[Image.Image],
        passes: Sequence[DetailerPass],
        embeds_for: Callable[[DetailerPass], PromptEmbeds],
        seeds: Sequence[int],
    ) -> tuple[list[Image.Image], list[DetailReport]]:
        check_seeds(images, seeds)
        images = [im.convert("RGB") for im in images]
        reports = [DetailReport() for _ in images]
        for params in passes:
            detector = self.detectors.get(params.detector)
            if detector is None:
                continue  # no weights for this detector: logged when it was loaded
            found = detector(images, params.confidence)
            jobs: list[tuple[int, MaskedCrop, int]] = []  # image index, region, seed
            for index, (image, detections) in enumerate(zip(images, found, strict=True)):
                kept = detections[: params.max_boxes]
                reports[index].detections[params.detector] = kept
                for k, det in enumerate(kept):
                    region = masked_crop(
                        image.size,
                        det.box,
                        dilate=params.mask_dilate,
                        blur=params.mask_blur,
                        padding=params.padding,
                    )
                    jobs.append((index, region, seeds[index] + 1000 * k))
            if not jobs:
                continue
            inpainted = self._inpaint(images, jobs, params, embeds_for(params))
            for (index, region, _), patch in zip(jobs, inpainted, strict=True):
                images[index] = paste(images[index], patch, region)
                reports[index].regions.append(region.crop)
        return images, reports

    def _inpaint(
        self,
        images: list[Image.Image],
        jobs: list[tuple[int, MaskedCrop, int]],
        params: DetailerPass,
        embeds: PromptEmbeds,
    ) -> list[Image.Image]:
        multiple = size_multiple(self.base)
        if params.size % multiple:
            raise ValueError(f"detailer size {params.size} must be a multiple of {multiple}")
        pipe = self.derived(self.sampler)
        size = (params.size, params.size)
        out: list[Image.Image] = []
        for chunk in batched(jobs, self.batch_size):
            cuts = [region.cut(images[index], size) for index, region, _ in chunk]
            result = pipe(
                **repeat_embeds(embeds, len(chunk)),
                image=[c for c, _ in cuts],
                mask_image=[m for _, m in cuts],
                width=params.size,
                height=params.size,
                strength=params.denoise,
                num_inference_steps=img2img_steps(params.steps, params.denoise),
                guidance_scale=params.cfg,
                generator=generators([seed for _, _, seed in chunk]),
            )
            out.extend(result.images)
        return out
