"""Stages 2 and 4, the detailer (ADetailer's method).

For each pass (face, then hand): detect boxes, and for each box build a mask (dilated, blurred),
crop the mask's bounding box plus padding (grown towards a square), inpaint only that crop with the
pass's own prompt, and paste it back through the blurred mask. Pixels where the mask is 0 are
untouched, bit for bit. Crops of all images are inpainted in batches of one working size.

The working size keeps the crop's aspect (never squashed, unlike a fixed square when the crop
could not grow to one at the image's edge): a crop smaller than the pass's `size` is upscaled so its
longer side is `size` (A1111's "inpaint only masked"); a larger one is worked at its own size (never
below its native resolution); one longer than `NATIVE_LIMIT` x `size` is skipped, with a logged reason.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from PIL import Image

from services.generator.detectors import Detection, Detector
from services.generator.prompts import PromptEmbeds
from services.generator.regions import Box, MaskedCrop, masked_crop, paste
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

log = logging.getLogger(__name__)
NATIVE_LIMIT = 2  # crops longer than this many times the pass's size are skipped


@dataclass
class DetailReport:
    """What the detailer did to one image."""

    detections: dict[str, list[Detection]] = field(default_factory=dict)  # by detector kind
    detectors: dict[str, str] = field(default_factory=dict)  # kind -> the detector that ran
    regions: list[tuple[int, int, int, int]] = field(default_factory=list)  # crops inpainted
    skipped: list[str] = field(default_factory=list)  # regions left as they were, and why

    def to_json(self) -> dict:
        return {
            "detectors": dict(self.detectors),
            "detections": {
                kind: [{"box": list(d.box), "score": round(d.score, 3)} for d in found]
                for kind, found in self.detections.items()
            },
            "regions": [list(r) for r in self.regions],
            "skipped": list(self.skipped),
        }


def working_size(crop: Box, size: int, multiple: int) -> tuple[int, int] | None:
    """(width, height) to inpaint a crop at: its aspect kept (to the nearest `multiple`), the longer
    side `size` for a smaller crop, its own size for a larger one; None past NATIVE_LIMIT x size."""
    width, height = crop[2] - crop[0], crop[3] - crop[1]
    longer = max(width, height)
    if longer > NATIVE_LIMIT * size:
        return None
    scale = max(size / longer, 1.0)
    return tuple(max(multiple, round(v * scale / multiple) * multiple) for v in (width, height))


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
            multiple = size_multiple(self.base)
            jobs: list[tuple[int, MaskedCrop, int, tuple[int, int]]] = []  # image, region, seed, size
            for index, (image, detections) in enumerate(zip(images, found, strict=True)):
                kept = detections[: params.max_boxes]
                reports[index].detections[params.detector] = kept
                reports[index].detectors[params.detector] = detector.name
                for k, det in enumerate(kept):
                    region = masked_crop(
                        image.size,
                        det.box,
                        dilate=params.mask_dilate,
                        blur=params.mask_blur,
                        padding=params.padding,
                    )
                    size = working_size(region.crop, params.size, multiple)
                    if size is None:
                        x0, y0, x1, y1 = region.crop
                        reason = (
                            f"{params.detector} {x1 - x0}x{y1 - y0} px is larger than "
                            f"{NATIVE_LIMIT * params.size} px: left as generated, not repainted smaller"
                        )
                        log.info("detailer skipped a region: %s", reason)
                        reports[index].skipped.append(reason)
                        continue
                    jobs.append((index, region, seeds[index] + 1000 * k, size))
            if not jobs:
                continue
            inpainted = self._inpaint(images, jobs, params, embeds_for(params))
            for (index, region, _, _), patch in zip(jobs, inpainted, strict=True):
                images[index] = paste(images[index], patch, region)
                reports[index].regions.append(region.crop)
        return images, reports

    def _inpaint(
        self,
        images: list[Image.Image],
        jobs: list[tuple[int, MaskedCrop, int, tuple[int, int]]],
        params: DetailerPass,
        embeds: PromptEmbeds,
    ) -> list[Image.Image]:
        """Inpaint every job at its working size, batching jobs of one size; results in job order."""
        multiple = size_multiple(self.base)
        if params.size % multiple:
            raise ValueError(f"detailer size {params.size} must be a multiple of {multiple}")
        pipe = self.derived(self.sampler)
        by_size: dict[tuple[int, int], list[int]] = defaultdict(list)
        for position, job in enumerate(jobs):
            by_size[job[3]].append(position)
        out: list[Image.Image | None] = [None] * len(jobs)
        for (width, height), positions in by_size.items():
            for chunk in batched(positions, self.batch_size):
                cuts = [jobs[p][1].cut(images[jobs[p][0]], (width, height)) for p in chunk]
                result = pipe(
                    **repeat_embeds(embeds, len(chunk)),
                    image=[c for c, _ in cuts],
                    mask_image=[m for _, m in cuts],
                    width=width,
                    height=height,
                    strength=params.denoise,
                    num_inference_steps=img2img_steps(params.steps, params.denoise),
                    guidance_scale=params.cfg,
                    generator=generators([jobs[p][2] for p in chunk]),
                )
                for p, patch in zip(chunk, result.images, strict=True):
                    out[p] = patch
        return out  # type: ignore[return-value]
