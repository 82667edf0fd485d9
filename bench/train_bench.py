"""Likeness-training benchmark: our optimized path vs the eager diffusers baseline, same run.

SD-1.5-SIZED models with random weights (a step costs the same whatever the weights), 10 photos.

    python bench/train_bench.py                 # GPU: SD-1.5 sizes, 512 px
    python bench/train_bench.py --compile       # + torch.compile of the UNet (slow first step)
    python bench/train_bench.py --tiny          # CPU smoke test with the tiny preset
    python bench/train_bench.py --warm-up-only var/bench-compile-cache
        # a train worker's start: load + warm-up, eager (graphed) vs compiled with an empty and
        # with a filled compile cache, each in a fresh process, then 400 steps on the warm one

Baseline = what diffusers' train_dreambooth_lora.py does: batch 1, 100 steps per photo, frozen
weights in fp16 with autocast + GradScaler, the VAE and the text encoder run on every step.
Optimized = services/trainer/lora.train_lora: latents and the caption embedding computed once,
bf16 weights with fp32 LoRA, SDPA, channels_last, batch 4 (steps are launch-bound), 40 steps per
photo (1,600 samples instead of 1,000), optionally torch.compile.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import gpu_stats, sd15_random  # noqa: E402
from services.trainer import lora  # noqa: E402
from shared.ml import tiny  # noqa: E402

CAPTION = "a photo of zuvek woman"


def make_pipe(args, dtype: torch.dtype):
    parts = tiny.build_components() if args.tiny else sd15_random.sd15_components(args.device)
    return sd15_random.pipeline(parts, args.device, dtype)


def photos(n: int, size: int) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def baseline(args, images, config: lora.TrainConfig, steps: int) -> dict:
    """The eager loop of diffusers' DreamBooth-LoRA example (mixed precision fp16)."""
    cuda = args.device.startswith("cuda")
    weight_dtype = torch.float16 if cuda else torch.float32
    pipe = make_pipe(args, weight_dtype)
    params = lora.add_lora(pipe, lora.config_for(args.preset, train_text_encoder=False))
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate)
    scaler = torch.amp.GradScaler("cuda", enabled=cuda)
    pixels = lora._to_tensor(images, config.resolution).to(args.device)
    ids = pipe.tokenizer(
        CAPTION, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
    ).input_ids.to(args.device)
    g = torch.Generator().manual_seed(0)
    sync(args.device)
    began = time.perf_counter()
    for step in range(steps):
        with torch.autocast("cuda", dtype=torch.float16, enabled=cuda):
            batch = pixels[torch.randint(len(pixels), (1,), generator=g)]
            if torch.rand((), generator=g) < 0.5:
                batch = batch.flip(-1)
            with torch.no_grad():
                latents = pipe.vae.encode(batch.to(weight_dtype)).latent_dist.sample()
                latents = latents * pipe.vae.config.scaling_factor
                text = pipe.text_encoder(ids)[0]
            noise = torch.randn_like(latents)
            t = torch.randint(0, 1000, (1,), device=args.device)
            noisy = pipe.scheduler.add_noise(latents, noise, t)
            pred = pipe.unet(noisy, t, text).sample
            loss = F.mse_loss(pred.float(), noise.float())
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        if step == 0:
            sync(args.device)
            first = time.perf_counter() - began
    sync(args.device)
    total = time.perf_counter() - began
    return {"steps": steps, "batch": 1, "seconds": total, "first_step_s": first}


def optimized(args, images, config: lora.TrainConfig, steps: int, pipe=None, keep_losses=False) -> dict:
    pipe = pipe or make_pipe(args, lora.train_dtype(args.device))
    times = []
    sync(args.device)
    began = time.perf_counter()
    result = lora.train_lora(
        pipe,
        images,
        CAPTION,
        config,
        total_steps=steps,
        progress=lambda step, total, loss, eta: times.append((step, time.perf_counter())),
    )
    sync(args.device)
    total = time.perf_counter() - began
    # Steady state: between the first and the last progress report (set-up excluded: LoRA
    # layers, VAE latents, the CUDA graph's warm-up and capture; they weigh on short runs).
    (s0, t0), (s1, t1) = (times[0], times[-1]) if times else ((0, 0.0), (0, 0.0))
    return {
        "steps": steps,
        "batch": config.batch_size,
        "seconds": total,
        "first_report_s": times[0][1] - began if times else None,
        "steady_ms_per_step": round(1000 * (t1 - t0) / (s1 - s0), 1) if s1 > s0 else None,
        "final_loss": result.losses[-1],
        "cuda_graph": config.cuda_graph and args.device.startswith("cuda"),
    } | ({"losses": result.losses} if keep_losses else {})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny models on CPU (smoke test)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--photos", type=int, default=10)
    parser.add_argument("--compile", action="store_true", help="also measure our path with torch.compile")
    parser.add_argument(
        "--baseline-steps",
        type=int,
        default=None,
        help="measure this many baseline steps and extrapolate (default: all)",
    )
    parser.add_argument("--steps", type=int, default=None, help="override our step count")
    parser.add_argument("--batch", type=int, default=None, help="override our batch size")
    parser.add_argument("--resident", action="store_true", help="also train twice on one kept pipeline")
    parser.add_argument("--contiguous", action="store_true", help="UNet in NCHW, not channels_last")
    parser.add_argument(
        "--check-steps", type=int, default=0,
        help="also run this many steps eagerly (no CUDA graph) and compare the losses",
    )  # fmt: skip
    parser.add_argument(
        "--selection", type=int, default=0, help="also time checkpoint choice's renders of N snapshots"
    )
    parser.add_argument("--selection-only", action="store_true", help="only the --selection renders")
    parser.add_argument(
        "--preprocess-only", type=int, default=0, metavar="PX",
        help="only the preprocessing of --photos real face photos of PX px: stored checks vs detecting",
    )  # fmt: skip
    parser.add_argument(
        "--warm-up-only", type=Path, default=None, metavar="CACHE_DIR",
        help="only a worker's start: eager, compiled with CACHE_DIR emptied, compiled from it",
    )  # fmt: skip
    parser.add_argument("--warm-up-child", choices=["eager", "compiled"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.preset = "tiny" if args.tiny else "sd15"
    args.device = args.device or ("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    if args.device == "cpu":
        torch.set_num_threads(max(1, min(torch.get_num_threads(), 4)))

    overrides: dict = {"batch_size": args.batch} if args.batch else {}
    if args.contiguous:
        overrides["channels_last"] = False
    config = lora.config_for(args.preset, compile=args.compile, checkpoint_every=10**9, **overrides)
    images = photos(args.photos, config.resolution)
    ours_steps = args.steps or config.total_steps(args.photos)
    base_total = 100 * args.photos if not args.tiny else 5 * args.photos
    base_steps = min(args.baseline_steps or base_total, base_total)

    print(f"device={args.device} preset={args.preset} photos={args.photos}", file=sys.stderr)
    if args.warm_up_child:
        print(json.dumps(warm_up_child(args, replace(config, compile=args.warm_up_child == "compiled"))))
        return
    if args.warm_up_only:
        print(json.dumps(warm_up_runs(args), indent=2))
        return
    if args.preprocess_only:
        print(json.dumps({"preprocess": preprocess_seconds(args, config, args.preprocess_only)}, indent=2))
        return
    if args.selection_only:
        device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
        renders = selection_renders(args, config, args.selection or 4)
        print(json.dumps({"device": device_name, "checkpoint_choice_renders": renders}, indent=2))
        return
    base = baseline(args, images, config, base_steps)
    base["extrapolated_seconds"] = base["seconds"] / base_steps * base_total
    # The first step is warm-up (cuDNN autotune, allocator): count it once, not per step.
    steady = (base["seconds"] - base["first_step_s"]) / max(1, base_steps - 1)
    base["extrapolated_steady_seconds"] = base["first_step_s"] + steady * (base_total - 1)
    base["full_steps"] = base_total
    report = {
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "preset": args.preset,
        "photos": args.photos,
        "baseline_eager": base,
    }
    variants = [False, True] if args.compile else [False]  # --compile measures both
    for compiled in variants:
        config = lora.config_for(args.preset, compile=compiled, checkpoint_every=10**9, **overrides)
        ours = optimized(args, images, config, ours_steps)
        name = "optimized_compiled" if compiled else "optimized"
        report[name] = ours | {"compile": compiled}
        report[f"speedup_wall_{name}"] = round(base["extrapolated_seconds"] / ours["seconds"], 2)
        report[f"ms_per_sample_{name}"] = round(1000 * ours["seconds"] / (ours_steps * config.batch_size), 1)
        if args.device.startswith("cuda"):
            report[name]["peak_gpu_memory_gib"] = gpu_stats.peak_memory_gib()
    if args.check_steps:
        # Same seed, same config, eager steps: the replayed graph must follow the eager trajectory.
        graphed = optimized(args, images, config, args.check_steps, keep_losses=True)
        eager = optimized(args, images, replace(config, cuda_graph=False), args.check_steps, keep_losses=True)
        diff = max(abs(a - b) for a, b in zip(graphed.pop("losses"), eager.pop("losses"), strict=True))
        report["graph_vs_eager"] = {
            "steps": args.check_steps,
            "max_abs_loss_difference": diff,
            # whole call / steps: includes the set-up (the 93.5 ms of 2026-12-06 at 30 steps)
            "graphed_ms_per_step": round(1000 * graphed["seconds"] / args.check_steps, 1),
            "eager_ms_per_step": round(1000 * eager["seconds"] / args.check_steps, 1),
            "graphed_steady_ms_per_step": graphed["steady_ms_per_step"],
            "eager_steady_ms_per_step": eager["steady_ms_per_step"],
        }
        # The loss read back every step (as before 2026-12-06): a host-GPU sync per step.
        every = lora.LOSS_SYNC_EVERY
        lora.LOSS_SYNC_EVERY = 1
        synced = optimized(args, images, config, args.check_steps)
        lora.LOSS_SYNC_EVERY = every
        report["graph_vs_eager"]["graphed_sync_every_step_steady_ms_per_step"] = synced["steady_ms_per_step"]
    report["ms_per_sample_baseline"] = round(1000 * base["seconds"] / base_steps, 1)
    if args.resident:
        # A worker keeps its pipeline: the second likeness pays no load and no warm-up.
        config = lora.config_for(args.preset, compile=False, checkpoint_every=10**9, **overrides)
        pipe = make_pipe(args, lora.train_dtype(args.device))
        runs = []
        for _ in range(2):
            runs.append(optimized(args, images, config, ours_steps, pipe=pipe))
            lora.remove_lora(pipe)
        report["optimized_resident"] = {"first_job": runs[0], "second_job": runs[1]}
    if args.selection:
        report["checkpoint_choice_renders"] = selection_renders(args, config, args.selection)
    print(json.dumps(report, indent=2))


def preprocess_seconds(args, config: lora.TrainConfig, size: int) -> dict:
    """The train job's photo preprocessing (services/trainer/preprocess.py) of `args.photos` real
    face photos (skimage's astronaut, re-framed and mirrored, `size` px): each face detected and
    embedded again (before 2026-12-07) vs aligned from the photos worker's stored checks (dlib, CPU)."""
    from skimage import data

    from services.trainer import preprocess
    from shared import faces

    base = Image.fromarray(data.astronaut())
    images = []
    for i in range(args.photos):
        im = base.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if i % 2 else base
        im = im.crop((4 * i, 3 * i, 480 + 4 * i, 480 + 3 * i)).resize((size, size), Image.LANCZOS)
        images.append(im)
    kw = {"class_word": "woman", "size": config.resolution, "min_face_px": 80, "blur_min_variance": 0.0,
          "min_photos": 1, "trigger_word": "zuvek"}  # fmt: skip
    stored = []
    for image in images:  # what the photos worker stores at upload
        check = faces.check_photo(image, min_face_px=80, blur_min_variance=0.0, embed=True)
        stored.append(preprocess.StoredCheck(check.face, check.embedding) if check.accepted else None)
    began = time.perf_counter()
    again = preprocess.build_training_set(images, **kw)
    detect_again = time.perf_counter() - began
    began = time.perf_counter()
    reused = preprocess.build_training_set(images, stored=stored, **kw)
    from_stored = time.perf_counter() - began
    return {
        "photos": len(images), "size_px": size, "accepted": len(reused.crops),
        "detect_again_seconds": round(detect_again, 3), "stored_checks_seconds": round(from_stored, 3),
        "embeddings_equal": bool(np.array_equal(again.embeddings, reused.embeddings)),
    }  # fmt: skip


def selection_renders(args, config: lora.TrainConfig, snapshots: int) -> dict:
    """Checkpoint choice's rendering: every snapshot's validation seeds in batched calls
    (selection.render_snapshots) vs one call per snapshot (before 2026-12-06), same pipeline,
    the train job's size and steps; then the whole choice with its face checks (dlib, CPU)."""
    from services.trainer import selection, train

    pipe = make_pipe(args, lora.train_dtype(args.device))
    pipe.set_progress_bar_config(disable=True)
    lora.add_lora(pipe, config)
    states = []
    for k in range(snapshots):
        torch.manual_seed(k)
        states.append(
            (100 * (k + 1), {key: torch.randn_like(v) * 0.01 for key, v in lora.lora_state(pipe).items()})
        )
    steps = train.VALIDATION_STEPS[args.preset]
    kw = {"size": config.resolution, "steps": steps}
    warm = selection.render_snapshots(pipe, states[:1], CAPTION, **kw)  # warm-up (cuDNN, allocator)
    selection.identity_score(warm[0], np.zeros(128, np.float32))  # dlib's models load (the job has)
    sync(args.device)
    began = time.perf_counter()
    for _, state in states:
        lora.load_lora_state(pipe, state)
        selection.render_validation(pipe, CAPTION, **kw)
    sync(args.device)
    loop = time.perf_counter() - began
    # before 2026-12-07: 25 steps of the base's own scheduler (PNDM), one call per snapshot, eager
    began = time.perf_counter()
    for _, state in states:
        lora.load_lora_state(pipe, state)
        pipe(CAPTION, height=kw["size"], width=kw["size"], num_inference_steps=25, num_images_per_prompt=3,
             generator=[torch.Generator().manual_seed(s) for s in selection.VALIDATION_SEEDS])  # fmt: skip
    sync(args.device)
    before = time.perf_counter() - began
    began = time.perf_counter()
    selection.render_snapshots(pipe, states, CAPTION, batched=True, **kw)
    sync(args.device)
    batched = time.perf_counter() - began
    # the product's way: one call per snapshot, the UNet replayed from CUDA graphs captured in
    # this call (capture included), against the same renders eager
    began = time.perf_counter()
    graphed = selection.render_snapshots(pipe, states, CAPTION, graphs=True, **kw)
    sync(args.device)
    graphed_seconds = time.perf_counter() - began
    eager = selection.render_snapshots(pipe, states, CAPTION, graphs=False, **kw)
    diff = max(
        int(np.abs(np.asarray(a, dtype=np.int16) - np.asarray(b, dtype=np.int16)).max())
        for xs, ys in zip(graphed, eager, strict=True)
        for a, b in zip(xs, ys, strict=True)
    )
    # the whole checkpoint choice as the train job runs it (graphed renders, each snapshot's face
    # check beside the next render) against the same renders face-checked after the last one, the
    # way before 2026-12-07. Random weights draw no face: dlib's detection runs, no embedding.
    reference = np.zeros((1, 128), np.float32)
    parts: dict[str, float] = {}
    began = time.perf_counter()
    selection.select_checkpoint(pipe, states, reference, CAPTION, seconds=parts, **kw)
    sync(args.device)
    choice = time.perf_counter() - began
    began = time.perf_counter()
    for renders in graphed:
        selection.identity_score(renders, reference[0])
    faces_after = time.perf_counter() - began
    return {
        "checkpoint_choice_seconds": round(choice, 2),
        "checkpoint_choice_parts": {k: round(v, 2) for k, v in parts.items()},
        "before_faces_after_renders_seconds": round(graphed_seconds + faces_after, 2),
        "face_checks_alone_seconds": round(faces_after, 2),
        "snapshots": snapshots, "seeds": len(selection.VALIDATION_SEEDS), "size": config.resolution,
        "steps": steps, "sampler": selection.VALIDATION_SAMPLER,
        "before_25_steps_base_scheduler_seconds": round(before, 2),
        "one_call_per_snapshot_seconds": round(loop, 2), "batched_seconds": round(batched, 2),
        "graphed_seconds": round(graphed_seconds, 2), "graphed_vs_eager_pixels_max_diff": diff,
    }  # fmt: skip


def warm_up_child(args, config: lora.TrainConfig) -> dict:
    """One train worker's start in this process: load the pipeline, then `lora.warm_up` (the
    product's warm-up: compile or load the step from the cache, capture the CUDA graph), then a
    likeness's steps, whose steady ms/step show what the warm-up bought."""
    from torch._dynamo.utils import counters

    from shared.ml.compile_cache import use_compile_cache

    if config.compile:
        use_compile_cache(args.warm_up_only, args.device)
    sync(args.device)
    began = time.perf_counter()
    pipe = make_pipe(args, lora.train_dtype(args.device))
    sync(args.device)
    loaded = time.perf_counter() - began
    warm = lora.warm_up(pipe, config)
    steps = args.steps or config.total_steps(args.photos)
    graphs = counters["stats"]["unique_graphs"]
    job = optimized(args, photos(args.photos, config.resolution), config, steps, pipe=pipe)
    job["graphs_compiled_in_job"] = counters["stats"]["unique_graphs"] - graphs  # 0: the warm-up's serve
    inductor = counters["inductor"]
    return {
        "compile": config.compile,
        "load_seconds": round(loaded, 2),
        "warm_up_seconds": round(warm, 2),
        "start_seconds": round(loaded + warm, 2),
        "fxgraph_cache": {"hit": inductor["fxgraph_cache_hit"], "miss": inductor["fxgraph_cache_miss"]},
        "job": job,
    }


def warm_up_runs(args) -> dict:
    """A train worker's start three ways, each in a fresh process (a process's own in-memory
    caches would hide the cold compile): eager, compiled with an emptied compile cache, compiled
    from the cache the second run filled."""
    import shutil
    import subprocess

    def child(kind: str) -> dict:
        command = [sys.executable, __file__, "--warm-up-child", kind]
        command += ["--warm-up-only", str(args.warm_up_only)]
        command += ["--photos", str(args.photos), "--device", args.device] + (["--tiny"] if args.tiny else [])
        if args.steps:
            command += ["--steps", str(args.steps)]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        return json.loads(done.stdout.strip().splitlines()[-1])

    shutil.rmtree(args.warm_up_only, ignore_errors=True)
    report = {"device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"}
    report["eager_graphed"] = child("eager")
    report["compiled_empty_cache"] = child("compiled")
    report["compiled_from_cache"] = child("compiled")
    return report


if __name__ == "__main__":
    main()
