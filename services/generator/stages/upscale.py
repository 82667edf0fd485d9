"""Stage 5, upscale (Ultimate SD Upscale's method): ESRGAN (spandrel) to `factor` x, then a
tiled img2img under the tile ControlNet at low denoise.

The image is cut into a grid of `tile` px cells; each cell is processed in a window of the cell
plus `padding` on each side (all windows the same size, so tiles batch), and the results are
blended with each cell's mask blurred by `mask_blur`, normalised so seams fade smoothly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from services.generator.prompts import PromptEmbeds
from services.generator.regions import Box, gaussian_blur
from services.generator.stages.common import (
    DerivedPipe,
    batched,
    check_seeds,
    generators,
    img2img_steps,
    repeat_embeds,
    size_multiple,
)
from shared.styles import UpscaleParams


@dataclass(frozen=True)
class Tile:
    cell: Box  # the grid cell this tile is responsible for
    window: Box  # the region processed (cell + padding, shifted inside the image)
    weight: np.ndarray  # (H, W) float32 blend weight, zero outside `window`


def plan_tiles(size: tuple[int, int], tile: int, padding: int, mask_blur: int, multiple: int) -> list[Tile]:
    """The tile grid of an image with normalised blend weights (they sum to 1 at every pixel)."""
    width, height = size
    window_w = min(_round_up(tile + 2 * padding, multiple), width)
    window_h = min(_round_up(tile + 2 * padding, multiple), height)
    tiles, weights = [], []
    for row in range(math.ceil(height / tile)):
        for col in range(math.ceil(width / tile)):
            cell = (
                col * tile,
                row * tile,
                min((col + 1) * tile, width),
                min((row + 1) * tile, height),
            )
            window = (
                _place(cell[0], cell[2], window_w, width),
                _place(cell[1], cell[3], window_h, height),
            )
            window = (window[0], window[1], window[0] + window_w, window[1] + window_h)
            mask = np.zeros((height, width), np.float32)
            mask[cell[1] : cell[3], cell[0] : cell[2]] = 1.0
            mask = gaussian_blur(mask, mask_blur)
            inside = np.zeros_like(mask)
            inside[window[1] : window[3], window[0] : window[2]] = 1.0
            weights.append(mask * inside)
            tiles.append((cell, window))
    total = np.sum(weights, axis=0)
    if (total <= 0).any():
        raise ValueError("tile windows do not cover the image")
    return [Tile(c, w, wt / total) for (c, w), wt in zip(tiles, weights, strict=True)]


def _round_up(value: int, multiple: int) -> int:
    return math.ceil(value / multiple) * multiple


def _place(a: int, b: int, length: int, limit: int) -> int:
    """Start of a window of `length` centred on [a, b), shifted to stay inside [0, limit)."""
    start = (a + b) // 2 - length // 2
    return min(max(start, 0), limit - length)


def esrgan_upscale(
    model, images: Sequence[Image.Image], factor: float, batch_size: int = 8
) -> list[Image.Image]:
    """`esrgan_upscale_tensors` as RGB PIL images of round(w * factor) x round(h * factor) px.
    Raises ValueError for factor <= 0."""
    return [to_pil(t) for t in esrgan_upscale_tensors(model, images, factor, batch_size)]


def esrgan_upscale_tensors(
    model, images: Sequence[Image.Image], factor: float, batch_size: int = 8
) -> list[torch.Tensor]:
    """Run a spandrel ESRGAN model over `images` (batched by size), then resize each to exactly
    `factor` x its input on the device (antialiased bicubic; A1111 resizes with PIL's Lanczos on
    the CPU, which cost ~0.3 s of CPU a 1024x1536 portrait while the GPU waited).

    Returns one uint8 tensor (3, round(h * factor), round(w * factor)) per image on the model's
    device (8 bits, as a PNG holds it: the tiles start from the pixels A1111's Ultimate SD Upscale
    would crop; a quarter of float32's memory while the tile pass runs). Raises ValueError for
    factor <= 0.
    """
    if factor <= 0:
        raise ValueError("upscale factor must be > 0")
    param = next(model.model.parameters())
    out: list[torch.Tensor | None] = [None] * len(images)
    by_size: dict[tuple[int, int], list[int]] = {}
    for index, image in enumerate(images):
        by_size.setdefault(image.size, []).append(index)
    for (width, height), indices in by_size.items():
        target = (round(height * factor), round(width * factor))  # (H, W)
        for chunk in batched(indices, batch_size):
            x = torch.from_numpy(np.stack([np.asarray(images[i].convert("RGB")) for i in chunk]))
            # NHWC bytes -> a channels_last NCHW view: no copy, and what a channels_last model wants
            x = x.to(param.device).permute(0, 3, 1, 2).to(param.dtype) / 255.0
            with torch.no_grad():
                y = model(x).float()
                if tuple(y.shape[-2:]) != target:
                    y = F.interpolate(y, size=target, mode="bicubic", antialias=True)
                y = (y.clamp(0, 1) * 255.0).round().to(torch.uint8)
            for i, tensor in zip(chunk, y, strict=True):
                out[i] = tensor.contiguous()
    return out  # type: ignore[return-value]


def to_pil(image: torch.Tensor) -> Image.Image:
    """A (3, H, W) tensor (any device) as an RGB PIL image: uint8 as it is, a float tensor in
    [0, 1] rounded to 8 bits."""
    if image.dtype != torch.uint8:
        image = (image.clamp(0, 1) * 255.0).round().to(torch.uint8)
    return Image.fromarray(image.permute(1, 2, 0).cpu().numpy())


@lru_cache(maxsize=8)
def _blend_weights(
    size: tuple[int, int], tile: int, padding: int, mask_blur: int, multiple: int
) -> list[tuple[Box, torch.Tensor]]:
    """`plan_tiles` as (window, weight) pairs, each weight a (1, h, w) float32 CPU tensor of its
    window only (copied out: the plan's full-image arrays are not kept). Cached: the plan of a size
    is the same for every portrait (0.3 s of CPU to make); a call moves it to its device."""
    pairs = []
    for t in plan_tiles(size, tile, padding, mask_blur, multiple):
        x0, y0, x1, y1 = t.window
        pairs.append((t.window, torch.from_numpy(np.ascontiguousarray(t.weight[y0:y1, x0:x1]))[None]))
    return pairs


class UpscaleStage:
    def __init__(
        self, base, controlnet_tile, upscaler, sampler: str = "DPM++ 2M Karras", batch_size: int = 8
    ):
        from diffusers import StableDiffusionControlNetImg2ImgPipeline

        self.base = base
        self.upscaler = upscaler
        self.sampler = sampler
        self.batch_size = batch_size
        self.derived = DerivedPipe(StableDiffusionControlNetImg2ImgPipeline, base, controlnet=controlnet_tile)

    def __call__(
        self,
        images: Sequence[Image.Image],
        embeds: PromptEmbeds,
        params: UpscaleParams,
        seeds: Sequence[int],
    ) -> list[Image.Image]:
        check_seeds(images, seeds)
        # The images stay on the device from ESRGAN to the blend: in PIL, converting 48 tiles a set
        # to and from the pipeline cost ~2 s of CPU while the GPU waited.
        big = esrgan_upscale_tensors(self.upscaler, images, params.factor, self.batch_size)
        if params.denoise == 0:
            return [to_pil(t) for t in big]
        pipe = self.derived(self.sampler)
        multiple = size_multiple(self.base)
        jobs = []  # (image index, window, weight, seed); tiles of all images share one batch queue
        for index, image in enumerate(big):
            height, width = image.shape[-2:]
            if width % multiple or height % multiple:
                raise ValueError(f"upscaled size {(width, height)} must be a multiple of {multiple}")
            plan = _blend_weights((width, height), params.tile, params.padding, params.mask_blur, multiple)
            jobs += [
                (index, window, weight.to(image.device), seeds[index] + 7919 * k)
                for k, (window, weight) in enumerate(plan)
            ]
        sums = [torch.zeros(image.shape, dtype=torch.float32, device=image.device) for image in big]
        for chunk in batched(jobs, self.batch_size):
            crops = torch.stack([big[index][:, y0:y1, x0:x1] for index, (x0, y0, x1, y1), _, _ in chunk])
            crops = crops.float() / 255.0  # the 8-bit pixels in [0, 1], as diffusers takes a tensor
            result = pipe(
                **repeat_embeds(embeds, len(chunk)),
                image=crops,
                control_image=crops,  # tile_resample: the control is the image itself
                width=crops.shape[-1],
                height=crops.shape[-2],
                strength=params.denoise,
                num_inference_steps=img2img_steps(params.steps, params.denoise),
                guidance_scale=params.cfg,
                controlnet_conditioning_scale=params.controlnet_scale,
                generator=generators([seed for _, _, _, seed in chunk]),
                output_type="pt",
            )
            for (index, (x0, y0, x1, y1), weight, _), out in zip(chunk, result.images, strict=True):
                sums[index][:, y0:y1, x0:x1] += weight * out.float()
        return [to_pil(s) for s in sums]
