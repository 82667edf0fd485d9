"""LoRA training of a likeness on the UNet's attention projections (diffusers + peft).

The loop is small and explicit: latents of the crops (and their mirror images) and the caption's
text embedding are computed once, then every step draws images, noise and timesteps from ONE
seeded generator. Checkpoints hold the LoRA weights, the optimizer and that generator, so a run
resumed from a checkpoint continues the exact same trajectory.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F
from PIL import Image

ADAPTER = "likeness"
UNET_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
LOSS_SYNC_EVERY = 10  # steps between reads of the loss (each read is a host-GPU sync)

ProgressFn = Callable[[int, int, float, float], None]  # step, total, loss, eta_seconds


@dataclass(frozen=True)
class TrainConfig:
    """Training hyper-parameters. alpha == rank keeps the LoRA scale at 1 in every loader."""

    resolution: int = 512
    rank: int = 16
    alpha: float = 16
    learning_rate: float = 1e-4
    steps_per_photo: int = 40  # total steps scale with the set, clamped to [min_steps, max_steps]
    min_steps: int = 300
    max_steps: int = 800
    batch_size: int = 4  # a step is launch-bound on big GPUs: batch 4 costs about what 1 does
    flip: bool = True  # mirror images double the set (faces are near-symmetric)
    train_text_encoder: bool = False
    text_encoder_lr: float = 5e-5
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    checkpoint_every: int = 100
    channels_last: bool = True  # on CUDA: faster convolutions
    compile: bool = False  # torch.compile the UNet: ~2-3x per step, ~100 s to compile a shape
    # On CUDA, with a frozen text encoder: the whole step (forward, loss, backward, clipping,
    # AdamW) is captured once as a CUDA graph and replayed; eager steps are launch-bound
    # (FIELD_NOTES, H200: 152.6 ms eager vs 53.2 ms replayed at batch 4).
    cuda_graph: bool = True

    def total_steps(self, n_photos: int) -> int:
        return max(self.min_steps, min(self.max_steps, self.steps_per_photo * n_photos))


PRESETS: dict[str, TrainConfig] = {
    # SD-1.5 likeness: ~10 photos -> 400 steps of batch 4 (1,600 samples, ~80 epochs of 20
    # images with mirrors), rank 16, AdamW 1e-4: the usual DreamBooth-LoRA recipe at batch 4.
    "sd15": TrainConfig(),
    # Random tiny models on a CPU: the same code at 64 px, a few dozen steps.
    "tiny": TrainConfig(
        resolution=64,
        rank=4,
        alpha=4,
        learning_rate=1e-2,  # random weights: a visible drop of the loss within 30 steps
        steps_per_photo=4,
        min_steps=20,
        max_steps=40,
        batch_size=2,
        checkpoint_every=10,
    ),
}


def config_for(preset: str, **overrides) -> TrainConfig:
    return replace(PRESETS[preset], **overrides)


class CheckpointStore(Protocol):
    """Where training checkpoints go (a local folder, or S3 in the job handler). Every checkpoint
    is kept until the likeness is exported: a resumed training reads the LoRA state of each earlier
    one, the snapshots its checkpoint choice weighs."""

    def save(self, step: int, state: bytes) -> None: ...

    def latest(self) -> tuple[int, bytes] | None: ...

    def earlier(self, step: int) -> list[tuple[int, bytes]]:
        """Every checkpoint saved before `step`, in step order."""
        ...


class LocalCheckpointStore:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def _files(self) -> dict[int, Path]:
        return {int(p.stem.removeprefix("step-")): p for p in sorted(self.folder.glob("step-*.ckpt"))}

    def save(self, step: int, state: bytes) -> None:
        path = self.folder / f"step-{step:08d}.ckpt"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(state)
        tmp.replace(path)

    def latest(self) -> tuple[int, bytes] | None:
        files = self._files()
        if not files:
            return None
        step = max(files)
        return step, files[step].read_bytes()

    def earlier(self, step: int) -> list[tuple[int, bytes]]:
        files = self._files()
        return [(s, files[s].read_bytes()) for s in sorted(files) if s < step]


@dataclass
class TrainResult:
    steps: int
    losses: list[float]  # one per step, from step 1 (includes steps before a resume)
    snapshots: list[tuple[int, dict[str, torch.Tensor]]]  # (step, LoRA state) at checkpoints
    resumed_from: int | None = None
    seconds: float = 0.0


def train_dtype(device: str) -> torch.dtype:
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    return torch.float32


def add_lora(pipe, config: TrainConfig, seed: int = 0) -> list[torch.nn.Parameter]:
    """Attach trainable LoRA adapters (fp32 even on a bf16 base) and return their parameters."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # peft draws the initial A matrices from the global generator
        return _add_lora(pipe, config)


def _add_lora(pipe, config: TrainConfig) -> list[torch.nn.Parameter]:
    pipe.unet.requires_grad_(False)
    pipe.vae.requires_grad_(False)
    pipe.text_encoder.requires_grad_(False)
    params = _add_adapter(pipe.unet, config, UNET_TARGETS)
    if config.train_text_encoder:
        params += _add_adapter(pipe.text_encoder, config, TEXT_TARGETS)
    return params


def _add_adapter(model, config: TrainConfig, targets: list[str]) -> list[torch.nn.Parameter]:
    from peft import LoraConfig

    lora_config = LoraConfig(
        r=config.rank, lora_alpha=config.alpha, init_lora_weights="gaussian", target_modules=targets
    )
    model.add_adapter(lora_config, adapter_name=ADAPTER)
    return _cast_lora_fp32(model)


def remove_lora(pipe) -> None:
    """Take the training adapters off again: the pipeline is the base model, ready for the next job."""
    if getattr(pipe.unet, "peft_config", None) or getattr(pipe.text_encoder, "peft_config", None):
        pipe.unload_lora_weights()


def _cast_lora_fp32(model) -> list[torch.nn.Parameter]:
    params = _lora_params(model)
    for p in params:
        p.data = p.data.float()
        p.requires_grad_(True)
    return params


def lora_state(pipe) -> dict[str, torch.Tensor]:
    """The trained weights in peft format, prefixed `unet.` / `text_encoder.` (a CPU copy)."""
    from peft.utils import get_peft_model_state_dict

    state = {
        f"unet.{k}": v.detach().cpu().clone()
        for k, v in get_peft_model_state_dict(pipe.unet, adapter_name=ADAPTER).items()
    }
    if getattr(pipe.text_encoder, "peft_config", None):
        te = get_peft_model_state_dict(pipe.text_encoder, adapter_name=ADAPTER)
        state |= {f"text_encoder.{k}": v.detach().cpu().clone() for k, v in te.items()}
    return state


def load_lora_state(pipe, state: dict[str, torch.Tensor], adapter_name: str = ADAPTER) -> None:
    from peft.utils import set_peft_model_state_dict

    for prefix, model in (("unet.", pipe.unet), ("text_encoder.", pipe.text_encoder)):
        part = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
        if part:
            set_peft_model_state_dict(model, part, adapter_name=adapter_name)


def _to_tensor(images: list[Image.Image], resolution: int) -> torch.Tensor:
    import numpy as np

    arrays = [np.asarray(im.convert("RGB").resize((resolution, resolution), Image.BICUBIC)) for im in images]
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return x


@torch.no_grad()
def encode_images(pipe, images: list[Image.Image], config: TrainConfig) -> torch.Tensor:
    """VAE latents of every crop (and its mirror): computed once, the VAE is not needed after."""
    pixels = _to_tensor(images, config.resolution)
    if config.flip:
        pixels = torch.cat([pixels, pixels.flip(-1)])
    vae = pipe.vae
    latents = []
    for chunk in pixels.split(8):
        dist = vae.encode(chunk.to(vae.device, vae.dtype)).latent_dist
        latents.append(dist.mean * vae.config.scaling_factor)
    return torch.cat(latents).float()


def encode_prompt(pipe, prompt: str) -> torch.Tensor:
    ids = pipe.tokenizer(
        prompt,
        padding="max_length",
        max_length=pipe.tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids.to(pipe.text_encoder.device)
    return pipe.text_encoder(ids)[0]


def train_lora(
    pipe,
    images: list[Image.Image],
    caption: str,
    config: TrainConfig,
    *,
    seed: int = 0,
    progress: ProgressFn | None = None,
    checkpoints: CheckpointStore | None = None,
    total_steps: int | None = None,
) -> TrainResult:
    """Train a LoRA on `pipe` (modified in place: it ends with the trained adapter attached)."""
    from diffusers import DDPMScheduler

    device = pipe.unet.device
    params = add_lora(pipe, config, seed)
    total = total_steps or config.total_steps(len(images))
    latents = encode_images(pipe, images, config)
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    groups = [{"params": _lora_params(pipe.unet)}]
    if config.train_text_encoder:
        groups.append({"params": _lora_params(pipe.text_encoder), "lr": config.text_encoder_lr})
    graphed = _use_cuda_graph(config, device)
    optimizer = torch.optim.AdamW(
        groups,
        lr=config.learning_rate,
        weight_decay=config.weight_decay,
        capturable=graphed,  # state on the GPU, no host sync: the step can live in a CUDA graph
    )
    generator = torch.Generator().manual_seed(seed)  # every random draw of the loop
    start, losses, snapshots, resumed = 0, [], [], None
    if checkpoints and (saved := checkpoints.latest()):
        start, losses, state = _restore(pipe, optimizer, generator, saved[1])
        resumed = start
        # The snapshots of the attempts before, so the checkpoint choice weighs the same snapshots
        # as an uninterrupted training (an attempt cut after its last step trains nothing more).
        snapshots = [(s, _lora_of(data)) for s, data in checkpoints.earlier(start)] + [(start, state)]
    unet_dtype = pipe.unet.dtype
    # A frozen text encoder gives the same embedding every step: computed (and cast) once.
    text = None if config.train_text_encoder else encode_prompt(pipe, caption).detach().to(unet_dtype)
    n_timesteps = noise_scheduler.config.num_train_timesteps
    epsilon = noise_scheduler.config.prediction_type == "epsilon"
    pipe.unet.train()
    if config.channels_last and device.type == "cuda":
        pipe.unet.to(memory_format=torch.channels_last)
    # Static shapes (one batch size, one resolution): one compile, no symbolic-shape guards.
    unet = torch.compile(pipe.unet, dynamic=False) if config.compile else pipe.unet

    def step_fn(noisy: torch.Tensor, t: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Forward, loss, backward, clipping, AdamW: the part that may be a CUDA graph."""
        cond = text if text is not None else encode_prompt(pipe, caption).to(unet_dtype)
        pred = unet(noisy, t, cond.expand(len(noisy), -1, -1)).sample
        loss = F.mse_loss(pred.float(), target)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
        return loss.detach()

    shape = (config.batch_size, *latents.shape[1:])
    run_step = _GraphedStep(step_fn, shape, unet_dtype, device, params, optimizer) if graphed else None
    began = time.monotonic()
    pending: list[torch.Tensor] = []  # losses still on the device
    for step in range(start + 1, total + 1):
        pick = torch.randint(len(latents), (config.batch_size,), generator=generator)
        x0 = latents[pick]
        # Drawn on the CPU generator (same numbers on every device, resumable), used on the device.
        noise = torch.randn(x0.shape, generator=generator).to(x0.device, x0.dtype)
        t = torch.randint(0, n_timesteps, (len(x0),), generator=generator).to(x0.device)
        noisy = noise_scheduler.add_noise(x0, noise, t).to(device, unet_dtype)
        target = (noise if epsilon else noise_scheduler.get_velocity(x0, noise, t)).to(device).float()
        if run_step is not None:
            loss = run_step(noisy, t.to(device), target).clone()  # the graph reuses its output
        else:
            loss = step_fn(noisy, t.to(device), target)
            optimizer.zero_grad(set_to_none=True)
        pending.append(loss)
        checkpoint = step % config.checkpoint_every == 0 or step == total
        if checkpoint or step % LOSS_SYNC_EVERY == 0:
            # Reading a loss waits for the GPU: done every LOSS_SYNC_EVERY steps, not every step,
            # so the host prepares the next steps while the GPU runs this one.
            losses += torch.stack(pending).tolist()
            pending.clear()
            if progress:
                rate = (time.monotonic() - began) / (step - start)
                progress(step, total, losses[-1], rate * (total - step))
        if checkpoint:
            state = lora_state(pipe)  # one CPU copy for the snapshot and the checkpoint
            snapshots.append((step, state))
            if checkpoints:
                checkpoints.save(step, _serialize(state, optimizer, generator, step, losses))
    pipe.unet.eval()
    if run_step is not None:
        run_step.release()
    return TrainResult(
        steps=total,
        losses=losses,
        snapshots=snapshots,
        resumed_from=resumed,
        seconds=time.monotonic() - began,
    )


def warm_up(pipe, config: TrainConfig) -> float:
    """Run two training steps of `config` on noise images, so that a compiled UNet
    (`config.compile`) is compiled or loaded from the compile cache before the first job; the
    pipeline is handed back without adapters. The steps have the job's shapes (batch_size, 4,
    resolution / 8, resolution / 8), so a job compiles nothing more. (Each job still captures its
    own CUDA graph of the step: 3 eager steps and a capture, as here.) Returns seconds."""
    import numpy as np

    began = time.monotonic()
    rng = np.random.default_rng(0)
    side = config.resolution
    images = [Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)) for _ in range(2)]
    try:
        train_lora(pipe, images, "a photo", config, total_steps=2)
    finally:
        remove_lora(pipe)
    return time.monotonic() - began


def _use_cuda_graph(config: TrainConfig, device: torch.device) -> bool:
    # A trained text encoder re-encodes the caption each step: it stays eager. A compiled UNet
    # (inductor's default mode: Triton kernels, no graphs of its own) is captured with the rest.
    return config.cuda_graph and device.type == "cuda" and not config.train_text_encoder


class _GraphedStep:
    """A training step captured once as a CUDA graph and replayed with new inputs.

    `step_fn(noisy, t, target) -> loss` must run only device work without host syncs (AdamW with
    `capturable=True`, clipping without `error_if_nonfinite`). Inputs are copied into static
    tensors of `shape` (noisy: `dtype`, t: int64, target: float32). Capturing needs a few eager
    warm-up steps (PyTorch's "whole network capture" recipe); they change the LoRA weights and the
    optimizer state, so both are put back afterwards and the replayed trajectory is the eager one.
    """

    def __init__(self, step_fn, shape: tuple[int, ...], dtype: torch.dtype, device, params, optimizer):
        self.noisy = torch.zeros(shape, dtype=dtype, device=device)
        self.t = torch.zeros(shape[0], dtype=torch.long, device=device)
        self.target = torch.zeros(shape, dtype=torch.float32, device=device)
        saved_params = [p.detach().clone() for p in params]
        saved_state = {
            p: {k: v.clone() for k, v in optimizer.state[p].items()} for p in params if p in optimizer.state
        }
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(3):
                optimizer.zero_grad(set_to_none=True)
                step_fn(self.noisy, self.t, self.target)
        torch.cuda.current_stream(device).wait_stream(side)
        optimizer.zero_grad(set_to_none=True)  # backward in the graph allocates the grads
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.loss = step_fn(self.noisy, self.t, self.target)
        with torch.no_grad():  # undo the warm-up and capture steps
            for p, saved in zip(params, saved_params, strict=True):
                p.copy_(saved)
            for p in params:
                for key, value in optimizer.state[p].items():
                    if p in saved_state:
                        value.copy_(saved_state[p][key])
                    else:
                        value.zero_()  # a fresh AdamW state: step 0, zero moments
        self.params = params

    def __call__(self, noisy: torch.Tensor, t: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self.noisy.copy_(noisy)
        self.t.copy_(t)
        self.target.copy_(target)
        self.graph.replay()
        return self.loss

    def release(self) -> None:
        """Free the graph's memory pool (the grads live in it)."""
        for p in self.params:
            p.grad = None
        del self.graph


def _lora_params(model) -> list[torch.nn.Parameter]:
    return [p for n, p in model.named_parameters() if "lora_" in n]


def _serialize(state: dict[str, torch.Tensor], optimizer, generator, step: int, losses: list[float]) -> bytes:
    buffer = io.BytesIO()
    torch.save(
        {
            "step": step,
            "losses": losses,
            "lora": state,
            "optimizer": optimizer.state_dict(),
            "rng": generator.get_state(),
        },
        buffer,
    )
    return buffer.getvalue()


def _restore(pipe, optimizer, generator, data: bytes) -> tuple[int, list[float], dict[str, torch.Tensor]]:
    """Load a checkpoint into `pipe`, `optimizer` and `generator`; (step, losses, LoRA state)."""
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    load_lora_state(pipe, state["lora"])
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["rng"])
    return int(state["step"]), list(state["losses"]), state["lora"]


def _lora_of(data: bytes) -> dict[str, torch.Tensor]:
    """The LoRA state (CPU tensors) of a checkpoint written by `_serialize`."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)["lora"]


def eta_text(seconds: float) -> str:
    if seconds < 90:
        return f"{math.ceil(seconds)} s"
    return f"{math.ceil(seconds / 60)} min"
