"""Host (CPU) work of the upscale stage's tile pass for a set of portraits, the PIL way it ran before
and the way it runs now (images kept as tensors from ESRGAN to the blend; services/generator/stages/
upscale.py). No network runs: this measures only the conversions around the pipeline calls, which
the GPU waited for. Prints JSON; run with `python bench/upscale_host_work.py [--count 8]`.

Before, per chunk of tiles: PIL crops, diffusers' VaeImageProcessor.preprocess of the image and of
the control image, postprocess of the output to PIL, the numpy blend; per image, the final
rounding; per call, `plan_tiles`. Now: `to_pil` of each finished image (the only host copy), and the
blend weights come from a cache. On a GPU the rest is device work (crops are views, the blend is
kernels), so it is not counted here."""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from diffusers.image_processor import VaeImageProcessor
from PIL import Image

from services.generator.stages.upscale import plan_tiles, to_pil


def before(big: list[Image.Image], tile: int, padding: int, blur: int, chunk: int) -> dict[str, float]:
    seconds = dict.fromkeys(("plan", "crop", "preprocess", "postprocess", "blend", "final"), 0.0)
    image_processor = VaeImageProcessor(vae_scale_factor=8)
    control_processor = VaeImageProcessor(vae_scale_factor=8, do_convert_rgb=True, do_normalize=False)
    t = time.perf_counter()
    plan = plan_tiles(big[0].size, tile, padding, blur, 8)
    seconds["plan"] = time.perf_counter() - t
    jobs = [(index, tile) for index in range(len(big)) for tile in plan]
    sums = [np.zeros((im.height, im.width, 3), np.float32) for im in big]
    for start in range(0, len(jobs), chunk):
        part = jobs[start : start + chunk]
        t = time.perf_counter()
        crops = [big[index].crop(tile.window) for index, tile in part]
        t1 = time.perf_counter()
        x = image_processor.preprocess(crops)
        control_processor.preprocess(crops)
        t2 = time.perf_counter()
        outs = image_processor.postprocess(x, output_type="pil")  # the decoded tiles, as PIL
        t3 = time.perf_counter()
        for (index, tile), out in zip(part, outs, strict=True):
            x0, y0, x1, y1 = tile.window
            sums[index][y0:y1, x0:x1] += tile.weight[y0:y1, x0:x1, None] * np.asarray(out, np.float32)
        t4 = time.perf_counter()
        seconds["crop"] += t1 - t
        seconds["preprocess"] += t2 - t1
        seconds["postprocess"] += t3 - t2
        seconds["blend"] += t4 - t3
    t = time.perf_counter()
    [Image.fromarray(np.clip(np.round(s), 0, 255).astype(np.uint8)) for s in sums]
    seconds["final"] = time.perf_counter() - t
    return seconds


def now(sums: list[torch.Tensor]) -> dict[str, float]:
    t = time.perf_counter()
    [to_pil(s) for s in sums]
    return {"final": time.perf_counter() - t}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=8, help="portraits in the set")
    parser.add_argument("--size", default="1024x1536", help="upscaled size, WxH")
    parser.add_argument("--chunk", type=int, default=16, help="tiles a pipeline call (batch x 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    width, height = (int(v) for v in args.size.split("x"))
    rng = np.random.default_rng(0)
    big = [Image.fromarray(rng.integers(0, 255, (height, width, 3), np.uint8)) for _ in range(args.count)]
    old = before(big, tile=512, padding=32, blur=8, chunk=args.chunk)
    new = now([torch.rand(3, height, width) for _ in range(args.count)])
    report = {"portraits": args.count, "size": args.size, "torch_threads": args.threads}
    for name, seconds in (("before", old), ("now", new)):
        report[f"{name}_seconds"] = {k: round(v, 3) for k, v in seconds.items()}
        report[f"{name}_total"] = round(sum(seconds.values()), 3)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
