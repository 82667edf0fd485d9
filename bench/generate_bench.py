"""Portrait-generation benchmark: the five-stage pipeline, our optimized path vs the naive eager
diffusers baseline, measured in the same run.

SD-1.5-SIZED models with random weights (UNet 860M, two ControlNets, VAE, CLIP ViT-L text,
RRDBNet 23-block ESRGAN): the cost of a step does not depend on the weights, so the seconds are
real even though the images are noise. Style "studio-business": 512x768, txt2img 25 steps,
face + hand detailer at 512 px (twice), beautify at denoise 0.35, 2x upscale with 512 px tiles.

    python bench/generate_bench.py                       # GPU, all phases, 8 portraits
    python bench/generate_bench.py --phases baseline,batched
    python bench/generate_bench.py --phases batched,compiled --compile default
    python bench/generate_bench.py --tiny                # CPU smoke test with tiny models

Phases (same models, in this order; each reports seconds per portrait and portraits per minute):
- baseline: what a plain diffusers script does: fp16, eager, one portrait at a time, LoRAs as
  peft adapters, the style's step counts.
- batched: fp16 + channels_last + fused QKV, portraits batched (4 per txt2img/img2img call, 8
  crops/tiles per inpaint/tile call), LoRAs baked into the weights, txt2img 20 steps.
- vae-norms / all-norms: batched with shared/ml/channels_last_norm.py's GroupNorm (no NCHW copies
  of channels_last tensors) in the VAE / in every network.
- contiguous: batched with NCHW networks (no channels_last at all).
- graphed: batched + CUDA graphs of the UNet and ControlNets (services/generator/graphed.py),
  captured per shape by `warm_up` (seconds reported apart), the graphed-vs-eager latents check,
  and the captures later jobs make (a new partial batch size only; a second user's job none).
- compiled: batched + the product's compiled networks (services/generator/compiled.py): static
  shape buckets of the style, compiled or loaded from the compile cache under MODEL_DIR by
  `warm_up` (its seconds and cache hits reported apart), and the compiled-vs-eager latents check.
Detectors are fixed boxes (one face, one hand per image): YOLOv8n costs ~2 ms an image.
Needs diffusers, peft and spandrel (pure-python wheels: carry them to the GPU machine).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import gpu_stats, sd15_random  # noqa: E402
from services.generator.detectors import Detection  # noqa: E402
from services.generator.pipeline import PortraitPipeline, Scale, scale_style  # noqa: E402
from services.generator.resident import ResidentModels  # noqa: E402
from shared.styles import get_style  # noqa: E402

BENCH_STYLE = "studio-business"
TINY_SCALE = Scale(width=64, height=96, steps=2, detail_size=64, tile=64, padding=16)


class FixedBoxes:
    """One face and one hand box per image, at portrait-like places."""

    name = "bench"

    def __init__(self, kind: str):
        self.kind = kind

    def __call__(self, images, confidence):
        out = []
        for im in images:
            w, h = im.size
            box = (0.38, 0.18, 0.62, 0.40) if self.kind == "face" else (0.25, 0.70, 0.40, 0.85)
            pixels = (int(box[0] * w), int(box[1] * h), int(box[2] * w), int(box[3] * h))
            out.append([Detection(pixels, 0.9, self.kind)])
        return out


def sd15_models(device: str, dtype: torch.dtype, workdir: Path) -> ResidentModels:
    """SD-1.5's architecture for every network, random init (fixed seed)."""
    from diffusers import ControlNetModel
    from safetensors.torch import save_file
    from spandrel.architectures.ESRGAN import ESRGAN

    from shared.ml import loading

    parts = sd15_random.sd15_components(device)
    with torch.device(device):
        controlnets = [ControlNetModel.from_unet(parts["unet"]) for _ in range(2)]
    pipe = sd15_random.pipeline(parts, device, dtype)
    pipe.set_progress_bar_config(disable=True)
    esrgan = ESRGAN(in_nc=3, out_nc=3, num_filters=64, num_blocks=23, scale=4)  # RealESRGAN_x4plus
    path = workdir / "esrgan-x4.safetensors"
    save_file({k: v.contiguous() for k, v in esrgan.state_dict().items()}, str(path))
    return ResidentModels(
        base=pipe,
        controlnet_openpose=controlnets[0].to(device, dtype),
        controlnet_tile=controlnets[1].to(device, dtype),
        upscaler=loading.load_upscaler_from(path, device=device),
        detectors={"face": FixedBoxes("face"), "hand": FixedBoxes("hand")},
        preset="bench-sd15-random",
        # Random weights in the architecture of the benchmarked style's base (an SD-1.5 fine-tune).
        base_name=get_style(BENCH_STYLE).base_model,
    )


def tiny_models() -> ResidentModels:
    from shared.ml import loading

    return ResidentModels(
        base=loading.load_base_pipeline("tiny", "cpu"),
        controlnet_openpose=loading.load_controlnet("openpose", "tiny", "cpu"),
        controlnet_tile=loading.load_controlnet("tile", "tiny", "cpu"),
        upscaler=loading.load_upscaler("tiny", "cpu"),
        detectors={"face": FixedBoxes("face"), "hand": FixedBoxes("hand")},
        preset="tiny",
        base_name="tiny",
    )


def random_lora(pipe, folder: Path, rank: int, text_encoder: bool = True) -> Path:
    """A random rank-`rank` LoRA on the UNet attention (and the text encoder), diffusers layout."""
    from diffusers import StableDiffusionPipeline
    from peft import LoraConfig

    torch.manual_seed(rank)
    models = [(pipe.unet, ("to_q", "to_k", "to_v", "to_out.0"), {})]
    if text_encoder:
        models.append((pipe.text_encoder, ("q_proj", "k_proj", "v_proj", "out_proj"), {}))
    for model, targets, out in models:
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Linear) and name.endswith(targets):
                out[f"{name}.lora_A.weight"] = torch.randn(rank, module.in_features) * 0.01
                out[f"{name}.lora_B.weight"] = torch.randn(module.out_features, rank) * 0.01
    LoraConfig(r=rank)  # peft must be importable: diffusers loads LoRAs through it
    StableDiffusionPipeline.save_lora_weights(
        str(folder), unet_lora_layers=models[0][2],
        text_encoder_lora_layers=models[1][2] if text_encoder else None,
        weight_name="pytorch_lora_weights.safetensors",
    )  # fmt: skip
    return folder / "pytorch_lora_weights.safetensors"


def make_likeness(pipe, folder: Path, rank: int) -> Path:
    """The user's likeness: a random LoRA with the trainer's metadata."""
    random_lora(pipe, folder, rank)
    (folder / "likeness.json").write_text(json.dumps({"trigger_word": "zuvek", "class_word": "woman"}))
    return folder


def style_lora_resolver(pipe, folder: Path, rank: int = 32):
    """Style LoRAs (detail, film grain...) as random UNet-only LoRAs: same cost as the real ones."""
    made: dict[str, Path] = {}

    def resolve(name: str) -> Path:
        if name not in made:
            made[name] = random_lora(pipe, folder / name, rank, text_encoder=False)
        return made[name]

    return resolve


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def forward_modules(models: ResidentModels) -> dict[str, torch.nn.Module | None]:
    """The module whose forward runs, per network (the VAE runs through encode/decode)."""
    nets = models.networks()
    nets["vae_encoder"], nets["vae_decoder"] = models.base.vae.encoder, models.base.vae.decoder
    del nets["vae"]
    return nets


def timed(pipeline: PortraitPipeline, likeness: Path, style, count: int, seed: int) -> tuple[float, dict]:
    """Seconds for `count` portraits, and {stage: seconds, "dtypes": {network: dtypes it ran in}}."""
    stages: dict = {}
    marks: list[tuple[str, float]] = []
    sync()
    start = time.perf_counter()
    with gpu_stats.dtypes_seen(forward_modules(pipeline.models)) as seen:
        pipeline(likeness, style, seed=seed, count=count,
                 progress=lambda f, s: marks.append((s, time.perf_counter())))  # fmt: skip
        sync()
    end = time.perf_counter()
    total = end - start
    # before the first stage: LoRAs fused in, prompts encoded; after the last: PNGs and metadata
    stages["prepare"] = round(marks[0][1] - start, 3)
    for (name, t0), (_, t1) in zip(marks, marks[1:], strict=False):
        stages[name] = round(t1 - t0, 3)
    stages["results"] = round(end - marks[-1][1], 3)
    stages["dtypes"] = seen
    return total, stages


def lora_seconds(pipeline: PortraitPipeline, likeness: Path, style, repeats: int = 3) -> dict:
    """Seconds to fuse the job's LoRAs into the weights and to restore them (min of `repeats`), as
    BakedLoras does (the pipeline's lora_mode "baked"), and the same through peft (`direct=False`)."""
    from services.generator.likeness import load_likeness
    from shared.extra_networks import extract_loras

    like = load_likeness(likeness)
    _, tags = extract_loras(style.prompt.replace("{likeness}", like.words))
    specs, _ = pipeline._lora_specs(style, tags, like)
    from services.generator.loras import BakedLoras

    def measure(direct: bool) -> tuple[float, float]:
        enter, leave = [], []
        for _ in range(repeats):
            baked = BakedLoras(pipeline.models.base, specs, direct=direct)
            sync()
            t0 = time.perf_counter()
            baked.__enter__()
            sync()
            t1 = time.perf_counter()
            baked.__exit__(None, None, None)
            sync()
            enter.append(t1 - t0)
            leave.append(time.perf_counter() - t1)
        return round(min(enter), 3), round(min(leave), 3)

    fuse, restore = measure(direct=True)
    peft_fuse, peft_restore = measure(direct=False)  # the baseline: peft's load-fuse-unload
    return {"loras": len(specs), "fuse": fuse, "restore": restore,
            "baseline_peft_fuse": peft_fuse, "baseline_peft_restore": peft_restore}  # fmt: skip


@contextlib.contextmanager
def _force_eager_compile():
    torch.compiler.set_stance("force_eager")
    try:
        yield
    finally:
        torch.compiler.set_stance("default")


@torch.no_grad()
def same_pictures(pipeline: PortraitPipeline, style, likeness: Path, eager=None) -> dict:
    """Max |fast - eager| of the final latents, for a txt2img batch (UNet + OpenPose
    ControlNet) and a partial batch of 3 upscale tiles (UNet + tile ControlNet), both through
    the compiled (or graphed) networks and again within `eager()` (default: torch.compile's
    stance "force_eager")."""
    from PIL import Image

    from services.generator.prompts import encode_prompt_pair
    from services.generator.stages.common import img2img_steps

    if pipeline.scale is not None:  # the tiny preset's sizes, as the pipeline itself scales
        style = scale_style(style, pipeline.scale)
    base = pipeline.models.base
    t2i, up = style.txt2img, style.upscale
    embeds = encode_prompt_pair(base.tokenizer, base.text_encoder, "portrait photo", "blurry")
    pose = Image.new("RGB", (t2i.width, t2i.height), (40, 80, 120))
    window = min(up.tile + 2 * up.padding, 2 * t2i.width)
    tiles = [Image.effect_noise((window, window), 40 + 10 * k).convert("RGB") for k in range(3)]

    def run() -> list[torch.Tensor]:
        n = pipeline.batch_size
        a = pipeline.txt2img.posed(t2i.sampler)(
            prompt_embeds=embeds.prompt_embeds.repeat(n, 1, 1),
            negative_prompt_embeds=embeds.negative_prompt_embeds.repeat(n, 1, 1),
            image=pose,
            width=t2i.width,
            height=t2i.height,
            num_inference_steps=t2i.steps,
            guidance_scale=t2i.cfg,
            controlnet_conditioning_scale=t2i.controlnet_scale,
            output_type="latent",
            generator=[torch.Generator().manual_seed(s) for s in range(n)],
        ).images
        b = pipeline.upscale.derived("DPM++ 2M Karras")(
            prompt_embeds=embeds.prompt_embeds.repeat(3, 1, 1),
            negative_prompt_embeds=embeds.negative_prompt_embeds.repeat(3, 1, 1),
            image=tiles,
            control_image=tiles,
            width=window,
            height=window,
            strength=up.denoise,
            num_inference_steps=img2img_steps(up.steps, up.denoise),
            guidance_scale=up.cfg,
            controlnet_conditioning_scale=up.controlnet_scale,
            output_type="latent",
            generator=[torch.Generator().manual_seed(s) for s in (3, 4, 5)],
        ).images
        return [a.float(), b.float()]  # fmt: skip

    fast = run()
    with (eager or _force_eager_compile)():
        reference = run()
    return {
        name: {"max_abs_diff": round((x - y).abs().max().item(), 5), "latent_std": round(y.std().item(), 4)}
        for name, x, y in zip(("txt2img", "tiles"), fast, reference, strict=True)
    }


@torch.no_grad()
def upscale_parts(pipeline: PortraitPipeline, style, count: int) -> dict:
    """Seconds of two parts of the upscale stage for `count` txt2img-sized images: ESRGAN (with
    its resize to the style's factor) and the VAE encode + decode of all their tiles in batches of
    the pipeline's tile batch; the rest of the stage is the tile ControlNet + UNet steps."""
    from PIL import Image

    from services.generator.stages.common import batched, size_multiple
    from services.generator.stages.upscale import _blend_weights, esrgan_upscale_tensors

    if pipeline.scale is not None:
        style = scale_style(style, pipeline.scale)
    t2i, up = style.txt2img, style.upscale
    images = [Image.effect_noise((t2i.width, t2i.height), 40 + k).convert("RGB") for k in range(count)]
    upscale = pipeline.upscale
    esrgan_upscale_tensors(upscale.upscaler, images[:1], up.factor)  # warm-up
    sync()
    t0 = time.perf_counter()
    big = esrgan_upscale_tensors(upscale.upscaler, images, up.factor, upscale.batch_size)
    sync()
    esrgan = time.perf_counter() - t0
    size = (big[0].shape[-1], big[0].shape[-2])
    plan = _blend_weights(size, up.tile, up.padding, up.mask_blur, size_multiple(pipeline.models.base))
    crops = [b[:, y0:y1, x0:x1] for b in big for (x0, y0, x1, y1), _ in plan]
    vae = pipeline.models.base.vae
    dtype = next(vae.parameters()).dtype
    seconds = 0.0
    for warm in (True, False):
        sync()
        t0 = time.perf_counter()
        for chunk in batched(crops, upscale.batch_size):
            x = (torch.stack(list(chunk)).to(dtype) / 127.5 - 1).contiguous(memory_format=torch.channels_last)
            vae.decode(vae.encode(x).latent_dist.mode())
            if warm:
                break
        sync()
        seconds = time.perf_counter() - t0
    return {"esrgan": round(esrgan, 3), "tiles": len(crops), "tile_vae_encode_decode": round(seconds, 3)}


def phase_result(name: str, total: float, count: int, stages: dict, **extra) -> dict:
    result = {
        "phase": name,
        "portraits": count,
        "seconds": round(total, 3),
        "seconds_per_portrait": round(total / count, 3),
        "portraits_per_minute": round(60 * count / total, 2),
        "stage_seconds": stages,
        **extra,
    }
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny models on CPU (smoke test)")
    parser.add_argument("--count", type=int, default=8, help="portraits in the throughput set")
    parser.add_argument("--phases", default="baseline,batched,compiled")
    parser.add_argument("--compile", default="default", help="torch.compile mode")
    parser.add_argument("--backend", default="inductor", help="torch.compile backend (eager: CPU smoke)")
    parser.add_argument("--fast-steps", type=int, default=20, help="txt2img steps, optimized")
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument("--profile", action="store_true", help="GPU-busy share (torch profiler)")
    parser.add_argument("--lean", action="store_true", help="batched: no LoRA-fuse or upscale-part timings")
    parser.add_argument("--out", default=None, help="JSON report (default: $OUT or stdout only)")
    args = parser.parse_args()
    phases = args.phases.split(",")

    device = "cpu" if args.tiny else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        sys.exit("no CUDA device: use --tiny for the CPU smoke test")
    if args.tiny:
        torch.set_num_threads(1)
    workdir = Path(tempfile.mkdtemp(prefix="generate-bench-"))
    t0 = time.perf_counter()
    models = tiny_models() if args.tiny else sd15_models(device, torch.float16, workdir)
    likeness = make_likeness(models.base, workdir / "likeness", 4 if args.tiny else args.lora_rank)
    scale = TINY_SCALE if args.tiny else None
    style = get_style(BENCH_STYLE)
    fast = style.model_copy(update={"txt2img": style.txt2img.model_copy(update={"steps": args.fast_steps})})
    report = {
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "torch": torch.__version__,
        "style": style.id,
        "size": [style.txt2img.width, style.txt2img.height] if not args.tiny else "tiny 64x96",
        "setup_seconds": round(time.perf_counter() - t0, 1),
        "phases": [],
    }
    common = {"scale": scale, "score_identity": False}
    if not args.tiny:  # the tiny preset skips style LoRAs (they cannot apply to random tiny models)
        common["lora_resolver"] = style_lora_resolver(models.base, workdir / "styles")
    fast_steps = scale.steps if scale else args.fast_steps  # the tiny scale fixes its own steps

    if "baseline" in phases:
        naive = PortraitPipeline(models, batch_size=1, lora_mode="adapters", **common)
        timed(naive, likeness, style, 1, seed=0)  # warm-up (cuDNN autotune, allocator)
        total, stages = timed(naive, likeness, style, 1, seed=1)
        report["phases"].append(phase_result("baseline-latency", total, 1, stages))
        total, stages = timed(naive, likeness, style, args.count, seed=2)
        extra = {"peak_gpu_memory_gib": gpu_stats.peak_memory_gib()} if device == "cuda" else {}
        if args.profile and device == "cuda":
            extra["profile"] = gpu_stats.gpu_busy(lambda: naive(likeness, style, seed=2, count=2))
        report["phases"].append(phase_result("baseline", total, args.count, stages, **extra))

    if {"batched", "vae-norms", "all-norms", "contiguous", "graphed", "compiled"} & set(phases):
        from services.generator.acceleration import accelerate
        from shared.ml.channels_last_norm import use_channels_last_norms

        accelerate(models, channels_last=not args.tiny, fuse_qkv=True)  # the product's eager layout
        layout_nets = [models.base.unet, models.controlnet_openpose, models.controlnet_tile, models.base.vae]

        def set_norms(enable: bool, nets=(models.base.vae,)) -> None:
            for net in nets:
                use_channels_last_norms(net, enable=enable and device == "cuda")

        def set_layout(memory_format: torch.memory_format) -> None:
            for net in layout_nets:
                net.to(memory_format=memory_format if not args.tiny else torch.contiguous_format)

        fast_pipe = PortraitPipeline(models, batch_size=4, lora_mode="baked", **common)
        if "batched" in phases:
            timed(fast_pipe, likeness, fast, args.count, seed=0)  # warm-up
            if device == "cuda":
                torch.cuda.reset_peak_memory_stats()
            total, stages = timed(fast_pipe, likeness, fast, args.count, seed=2)
            extra = {"peak_gpu_memory_gib": gpu_stats.peak_memory_gib()} if device == "cuda" else {}
            if args.profile and device == "cuda":
                extra["profile"] = gpu_stats.gpu_busy(
                    lambda: fast_pipe(likeness, fast, seed=2, count=args.count)
                )
            timed(fast_pipe, likeness, fast, 1, seed=0)  # warm-up of the one-portrait shapes
            latency, latency_stages = timed(fast_pipe, likeness, fast, 1, seed=3)
            if not args.lean:
                extra["lora_seconds"] = lora_seconds(fast_pipe, likeness, fast)
                extra["upscale_parts"] = upscale_parts(fast_pipe, fast, args.count)
            report["phases"].append(
                phase_result(
                    "batched", total, args.count, stages, txt2img_steps=fast_steps,
                    one_portrait_seconds=round(latency, 3), one_portrait_stages=latency_stages, **extra,
                )
            )  # fmt: skip
        layouts = {  # (change, undo) of the product's layout: channels_last, PyTorch's GroupNorm
            # ChannelsLastGroupNorm in the VAE only (an experiment: not in the product)
            "vae-norms": (lambda: set_norms(True), lambda: set_norms(False)),
            # ChannelsLastGroupNorm in every network (slower txt2img eager on an H200)
            "all-norms": (lambda: set_norms(True, layout_nets), lambda: set_norms(False, layout_nets)),
            # NCHW networks: no norm copies, but cuDNN converts around half convolutions
            "contiguous": (
                lambda: set_layout(torch.contiguous_format),
                lambda: set_layout(torch.channels_last),
            ),
        }
        for name in [p for p in phases if p in layouts]:
            change, undo = layouts[name]
            change()
            timed(fast_pipe, likeness, fast, args.count, seed=0)  # warm-up
            total, stages = timed(fast_pipe, likeness, fast, args.count, seed=2)
            extra = {}
            if args.profile and device == "cuda":
                extra["profile"] = gpu_stats.gpu_busy(
                    lambda: fast_pipe(likeness, fast, seed=2, count=args.count)
                )
            timed(fast_pipe, likeness, fast, 1, seed=0)  # warm-up of the one-portrait shapes
            latency, latency_stages = timed(fast_pipe, likeness, fast, 1, seed=3)
            report["phases"].append(
                phase_result(
                    name, total, args.count, stages, txt2img_steps=fast_steps,
                    one_portrait_seconds=round(latency, 3), one_portrait_stages=latency_stages, **extra,
                )
            )  # fmt: skip
            undo()
        if "graphed" in phases:
            # CUDA graphs of the eager networks (services/generator/graphed.py): captured per
            # shape by warm_up (the style's full batch and one portrait), no compiler.
            from services.generator import graphed

            began = time.perf_counter()
            buckets = fast_pipe.graph([fast])
            warm = fast_pipe.warm_up(freeze=False)
            warm_up_seconds = time.perf_counter() - began
            forwards = {
                n: net.forward
                for n, net in models.networks().items()
                if isinstance(getattr(net, "forward", None), graphed.GraphedForward)
            }

            def captures() -> dict[str, int]:
                return {n: f.captures for n, f in forwards.items()}

            at_warm_up = captures()
            same = same_pictures(fast_pipe, fast, likeness, eager=graphed.eager)
            timed(fast_pipe, likeness, fast, args.count, seed=0)  # partial batches get captured
            after_first = captures()
            total, stages = timed(fast_pipe, likeness, fast, args.count, seed=2)
            extra = {"peak_gpu_memory_gib": gpu_stats.peak_memory_gib()}
            if args.profile and device == "cuda":
                extra["profile"] = gpu_stats.gpu_busy(
                    lambda: fast_pipe(likeness, fast, seed=2, count=args.count)
                )
            timed(fast_pipe, likeness, fast, 1, seed=0)  # warm-up of the one-portrait shapes
            latency, latency_stages = timed(fast_pipe, likeness, fast, 1, seed=3)
            if args.profile and device == "cuda":
                extra["one_portrait_profile"] = gpu_stats.gpu_busy(
                    lambda: fast_pipe(likeness, fast, seed=3, count=1)
                )
            # a second user (another LoRA, rank 8): no new capture, and the graphs see its weights
            other = make_likeness(models.base, workdir / "likeness-b", max(1, args.lora_rank // 2))
            timed(fast_pipe, other, fast, args.count, seed=4)
            mine = np.asarray(fast_pipe(other, fast, seed=6, count=1)[0].image, dtype=np.int16)
            with graphed.eager():
                reference = np.asarray(fast_pipe(other, fast, seed=6, count=1)[0].image, dtype=np.int16)
            report["phases"].append(
                phase_result(
                    "graphed", total, args.count, stages, txt2img_steps=fast_steps,
                    buckets=len(buckets), warm_up_seconds=round(warm_up_seconds, 1),
                    bucket_seconds=warm, same_pictures=same,
                    second_user_pixels_max_diff=int(np.abs(mine - reference).max()),
                    graphs={n: len(f.graphs) for n, f in forwards.items()},
                    captures={"warm_up": at_warm_up,
                              "first_set": {n: after_first[n] - at_warm_up[n] for n in forwards},
                              "later_jobs": {n: c - after_first[n] for n, c in captures().items()}},
                    network_calls={n: f.calls for n, f in forwards.items()},
                    one_portrait_seconds=round(latency, 3), one_portrait_stages=latency_stages, **extra,
                )
            )  # fmt: skip
            for f in forwards.values():  # graphs dropped now, not at a later cycle collection
                f.compiled.close()
            for net in models.networks().values():  # eager again for the phases after this one
                if net is not None and "forward" in vars(net):
                    del net.forward
            del forwards  # the graphs, their buffers and the pool go before the next phase
            gc.collect()
            torch.cuda.empty_cache()
        if "compiled" in phases:
            # The product's path (services/generator/compiled.py): static shape buckets of the
            # style, compiled (or loaded from the compile cache under MODEL_DIR) by warm_up.
            counters = torch._dynamo.utils.counters
            began = time.perf_counter()
            buckets = fast_pipe.compile([fast], mode=args.compile, backend=args.backend)
            warm = fast_pipe.warm_up(freeze=False)
            warm_up_seconds = time.perf_counter() - began
            cache = {k: counters["inductor"][k] for k in ("fxgraph_cache_hit", "fxgraph_cache_miss")}
            cache |= {k: v for k, v in counters["aot_autograd"].items() if "cache" in k}
            # where warm-up time goes (dynamo tracing, AOT, inductor): seconds per phase, summed
            compile_seconds = {
                name: round(sum(times), 2)
                for name, times in torch._dynamo.utils.compilation_time_metrics.items()
                if sum(times) >= 0.5
            }
            graphs = counters["stats"]["unique_graphs"]
            same = same_pictures(fast_pipe, fast, likeness)
            timed(fast_pipe, likeness, fast, args.count, seed=0)  # warm-up (allocator, cuDNN)
            total, stages = timed(fast_pipe, likeness, fast, args.count, seed=2)
            extra = {}
            if args.profile and device == "cuda":
                extra["profile"] = gpu_stats.gpu_busy(
                    lambda: fast_pipe(likeness, fast, seed=2, count=args.count)
                )
            timed(fast_pipe, likeness, fast, 1, seed=0)  # warm-up of the one-portrait shapes
            latency, latency_stages = timed(fast_pipe, likeness, fast, 1, seed=3)
            extra["lora_seconds"] = lora_seconds(fast_pipe, likeness, fast)
            calls = {
                name: net.forward.calls
                for name, net in models.networks().items()
                if hasattr(getattr(net, "forward", None), "calls")
            }
            report["phases"].append(
                phase_result(
                    "compiled", total, args.count, stages, txt2img_steps=fast_steps,
                    compile_mode=args.compile, buckets=len(buckets),
                    warm_up_seconds=round(warm_up_seconds, 1), bucket_seconds=warm,
                    compile_cache=cache, compile_seconds=compile_seconds,
                    new_graphs_after_warm_up=counters["stats"]["unique_graphs"] - graphs,
                    network_calls=calls, same_pictures=same,
                    one_portrait_seconds=round(latency, 3), one_portrait_stages=latency_stages, **extra,
                )
            )  # fmt: skip

    by_name = {p["phase"]: p for p in report["phases"]}
    if "baseline" in by_name:
        for name in ("batched", "graphed", "compiled"):
            if name in by_name:
                report[f"speedup_{name}"] = round(
                    by_name["baseline"]["seconds"] / by_name[name]["seconds"], 2
                )
    for fast_name in ("graphed", "compiled"):  # against the same-run eager baseline of the product
        if "batched" in by_name and fast_name in by_name:
            b, c = by_name["batched"], by_name[fast_name]
            report[f"{fast_name}_vs_eager"] = {
                "seconds_per_portrait": [b["seconds_per_portrait"], c["seconds_per_portrait"]],
                "one_portrait_seconds": [b.get("one_portrait_seconds"), c.get("one_portrait_seconds")],
                "speedup": round(b["seconds"] / c["seconds"], 2),
            }
    text = json.dumps(report, indent=2)
    print(text)
    out = args.out or (Path(os.environ["OUT"]) / "generate_bench.json" if os.environ.get("OUT") else None)
    if out:
        Path(out).write_text(text)


if __name__ == "__main__":
    main()
