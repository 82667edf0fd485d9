"""Compiled networks for a fixed set of shape buckets, with a compile cache that survives restarts.

Why static buckets: with `dynamic=True` inductor spent over 520 s on the product's networks and
did not finish (symbolic-shape floods, issue 21); one static shape compiles in 60-110 s on an H100
and then runs the UNet at batch 8, 512x768, in 31.3 ms/step instead of 49.8 (FIELD_NOTES).

How it works:
- `StaticForward` replaces a network's `forward` (the module object stays the same, so the
  diffusers pipelines that share it via `from_pipe`, the dtype guard and the baked LoRAs see no
  difference). Each call is brought into one canonical form (contiguous tensors, a float32
  timestep per row, the ControlNet's `conditioning_scale` as a tensor so a style's scale is no
  guard) and its batch is padded up to the smallest bucket batch of that spatial size by repeating
  the last row; the padding rows are cut from the output. Rows are independent in these networks
  (GroupNorm and attention act per sample), so the real rows do not change.
- `shape_buckets` lists every shape a style set uses (txt2img, beautify, the detailer's square
  crop, the upscale tile window), and `warm_up` runs each network once per bucket. After warm-up
  the process runs with `torch.compiler.set_stance("eager_on_recompile")`: a shape outside the
  buckets runs eagerly instead of stalling a user's job for a minute-long compile.
- LoRAs must be baked in place (`BakedLoras`): parameters keep their identity and storage, so a
  second user's job reuses the compiled graphs (tests/generator/test_compiled.py counts compiles).
- `shared.ml.compile_cache.use_compile_cache` points inductor's and Triton's caches at
  `COMPILE_CACHE_DIR/<torch, CUDA, GPU>` (default MODEL_DIR/compile-cache), so a restarted worker
  loads kernels instead of compiling them again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

import torch

from shared.ml.cuda_graphs import timestep_rows

log = logging.getLogger(__name__)
# Networks compiled by name (ResidentModels.networks()); the VAE and ESRGAN run once per image and
# the text encoder once per prompt, so they stay eager.
COMPILED = ("unet", "controlnet_openpose", "controlnet_tile")


@dataclass(frozen=True, order=True)
class Bucket:
    """One compiled shape of one network: `batch` rows (images x 2 for CFG) of a latent of
    `height` x `width` (pixels / 8); `residuals`: the UNet is called with ControlNet residuals."""

    net: str
    batch: int
    height: int
    width: int
    residuals: bool = False


def shape_buckets(styles: Iterable, batch_size: int, vae_scale: int = 8, multiple: int = 8) -> list[Bucket]:
    """Every (network, shape) the pipeline calls for `styles` (already scaled), with images
    batched `batch_size` at a time (the detailer and the upscale tiles at 2 x batch_size, as
    PortraitPipeline does) and classifier-free guidance doubling the rows.

    txt2img: UNet with residuals + OpenPose ControlNet at the style's size; beautify: UNet at the
    same size; detailer: UNet at the square `size` crop (crops that cannot grow to a square run
    eagerly); upscale: UNet with residuals + tile ControlNet at the tile window."""
    found: set[Bucket] = set()
    for style in styles:
        t2i = style.txt2img
        h, w = t2i.height // vae_scale, t2i.width // vae_scale
        rows = 2 * batch_size
        found |= {
            Bucket("unet", rows, h, w, residuals=True),
            Bucket("controlnet_openpose", rows, h, w),
            Bucket("unet", rows, h, w),
        }
        for params in style.detailer:
            side = params.size // vae_scale
            found.add(Bucket("unet", 2 * rows, side, side))
        up = style.upscale
        if up.denoise > 0:
            window = -(-(up.tile + 2 * up.padding) // multiple) * multiple
            big_w, big_h = round(t2i.width * up.factor), round(t2i.height * up.factor)
            th, tw = min(window, big_h) // vae_scale, min(window, big_w) // vae_scale
            found |= {
                Bucket("unet", 2 * rows, th, tw, residuals=True),
                Bucket("controlnet_tile", 2 * rows, th, tw),
            }
    return sorted(found)


def _pad_rows(x: torch.Tensor, rows: int) -> torch.Tensor:
    """`x` with its last row repeated up to `rows` rows."""
    extra = rows - x.shape[0]
    if extra <= 0:
        return x
    return torch.cat([x, x[-1:].expand(extra, *x.shape[1:])])


def _timesteps(timestep, rows: int, device: torch.device) -> torch.Tensor:
    """The timestep as a float32 vector of `rows` values, a vector padded like the batch."""
    return _pad_rows(timestep_rows(timestep, rows, device), rows).contiguous()


class StaticForward:
    """A network's forward, compiled per bucket (see the module docstring). Calls whose spatial
    size has no bucket, whose batch exceeds the largest bucket or that pass keyword arguments
    outside the canonical set (cross_attention_kwargs, added_cond_kwargs, ...) run the eager
    forward unchanged."""

    # keyword arguments the diffusers pipelines pass that do not change the computation
    _NEUTRAL = {"timestep_cond": None, "cross_attention_kwargs": None, "added_cond_kwargs": None,
                "class_labels": None, "attention_mask": None, "guess_mode": False}  # fmt: skip

    def __init__(
        self, module: torch.nn.Module, kind: str, batches: dict[tuple[int, int], list[int]], **compile_kw
    ):
        self.module = module
        self.kind = kind  # "unet" | "controlnet"
        self.batches = {hw: sorted(set(b)) for hw, b in batches.items()}
        self.eager = type(module).forward.__get__(module)
        self.compiled = self._runner(**compile_kw)
        self.calls = {"compiled": 0, "eager": 0}
        self._eager_shapes: set[tuple[int, ...]] = set()

    def _runner(self, **compile_kw):
        """What runs `_core` for a bucket: here torch.compile (services/generator/graphed.py
        replays CUDA graphs instead)."""
        return torch.compile(self._core, dynamic=False, **compile_kw)

    def _core(self, sample, timestep, hidden, extra, scale):
        if self.kind == "unet":
            down, mid = extra
            return self.eager(
                sample, timestep, hidden,
                down_block_additional_residuals=None if down is None else list(down),
                mid_block_additional_residual=mid, return_dict=False,
            )  # fmt: skip
        down, mid = self.eager(sample, timestep, hidden, extra, conditioning_scale=scale, return_dict=False)
        return tuple(down), mid

    def _canonical(self, hidden, args, kwargs) -> bool:
        """Whether the call has the canonical form `_core` runs (else it runs eagerly)."""
        allowed = {"return_dict", "down_block_additional_residuals", "mid_block_additional_residual"}
        if self.kind == "controlnet":
            allowed = {"return_dict", "controlnet_cond", "conditioning_scale"}
        for key, value in kwargs.items():
            if key not in allowed and not (key in self._NEUTRAL and value is self._NEUTRAL[key]):
                return False
        return not (args or hidden is None or (self.kind == "controlnet" and "controlnet_cond" not in kwargs))

    def _rows(self, sample, hidden, args, kwargs) -> int | None:
        """The bucket batch of this call, or None to run it eagerly."""
        if not self._canonical(hidden, args, kwargs):
            return None
        sizes = self.batches.get(tuple(sample.shape[-2:]), [])
        return next((b for b in sizes if b >= sample.shape[0]), None)

    def __call__(self, sample, timestep, encoder_hidden_states=None, *args, **kwargs):
        rows = self._rows(sample, encoder_hidden_states, args, kwargs)
        if rows is None:
            self.calls["eager"] += 1
            shape = tuple(sample.shape)
            if shape not in self._eager_shapes:  # once per shape: a missing bucket costs speed
                self._eager_shapes.add(shape)
                log.info("%s runs eagerly for input %s (no compiled bucket)", self.kind, shape)
            return self.eager(sample, timestep, encoder_hidden_states, *args, **kwargs)
        self.calls["compiled"] += 1
        n, return_dict = sample.shape[0], kwargs.get("return_dict", True)

        def pad(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else _pad_rows(x, rows).contiguous()

        sample_p, hidden = pad(sample), pad(encoder_hidden_states)
        t = _timesteps(timestep, rows, sample.device)
        if self.kind == "unet":
            down = kwargs.get("down_block_additional_residuals")
            extra = (None if down is None else tuple(pad(d) for d in down),
                     pad(kwargs.get("mid_block_additional_residual")))  # fmt: skip
            (out,) = self.compiled(sample_p, t, hidden, extra, None)
            out = out[:n]
            if return_dict:
                from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

                return UNet2DConditionOutput(sample=out)
            return (out,)
        scale = torch.as_tensor(
            kwargs.get("conditioning_scale", 1.0), device=sample.device, dtype=torch.float32
        )
        down_p, mid_p = self.compiled(sample_p, t, hidden, pad(kwargs["controlnet_cond"]), scale)
        down_p, mid_p = [d[:n] for d in down_p], mid_p[:n]
        if return_dict:
            from diffusers.models.controlnets.controlnet import ControlNetOutput

            return ControlNetOutput(down_block_res_samples=down_p, mid_block_res_sample=mid_p)
        return down_p, mid_p


def compile_networks(models, buckets: list[Bucket], mode: str = "default", backend: str = "inductor") -> dict:
    """Install a `StaticForward` on each network of COMPILED that has buckets (in place).
    Returns {name: StaticForward}. Compiling happens lazily, on the first call of each bucket
    (`warm_up` makes those calls)."""
    nets = models.networks()
    installed = {}
    for name in COMPILED:
        net = nets.get(name)
        mine = [b for b in buckets if b.net == name]
        if net is None or not mine:
            continue
        if isinstance(getattr(net, "forward", None), StaticForward):
            installed[name] = net.forward
            continue
        batches: dict[tuple[int, int], list[int]] = {}
        for b in mine:
            batches.setdefault((b.height, b.width), []).append(b.batch)
        kind = "unet" if name == "unet" else "controlnet"
        kw = {"backend": backend} if backend != "inductor" else {"mode": mode}
        net.forward = installed[name] = StaticForward(net, kind, batches, **kw)
    # Each bucket is one graph of the same code object: allow them all (dynamo's limit is 8).
    limit = max(8, 2 * len(buckets))
    name = "recompile_limit" if hasattr(torch._dynamo.config, "recompile_limit") else "cache_size_limit"
    setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), limit))
    return installed


@torch.no_grad()
def warm_up(models, buckets: list[Bucket], text_dim: int | None = None, tokens: int = 77) -> dict[str, float]:
    """Call each compiled network once per bucket (compiles it, or loads it from the compile
    cache) with the dtypes and call forms of the pipelines. Returns seconds per bucket."""
    nets = models.networks()
    unet = nets["unet"]
    param = next(unet.parameters())
    dim = text_dim or unet.config.cross_attention_dim
    seconds = {}
    for b in buckets:
        began = time.perf_counter()
        sample = torch.randn(
            b.batch, unet.config.in_channels, b.height, b.width, device=param.device, dtype=param.dtype
        )
        hidden = torch.randn(b.batch, tokens, dim, device=param.device, dtype=param.dtype)
        t = torch.tensor(999, device=param.device)
        if b.net == "unet":
            down = mid = None
            if b.residuals:
                down, mid = _residual_shapes(_controlnet_for(nets, b), sample, t, hidden, b)
            unet(sample, t, encoder_hidden_states=hidden, down_block_additional_residuals=down,
                 mid_block_additional_residual=mid, return_dict=False)  # fmt: skip
        else:
            net = nets[b.net]
            cond = torch.rand(b.batch, 3, b.height * 8, b.width * 8, device=param.device, dtype=param.dtype)
            net(sample, t, encoder_hidden_states=hidden, controlnet_cond=cond, conditioning_scale=1.0,
                guess_mode=False, return_dict=False)  # fmt: skip
        if param.device.type == "cuda":
            torch.cuda.synchronize()
        seconds[f"{b.net}:{b.batch}x{b.height}x{b.width}{'+res' if b.residuals else ''}"] = round(
            time.perf_counter() - began, 2
        )
    return seconds


def _controlnet_for(nets: dict, b: Bucket):
    """The ControlNet compiled for the bucket's shape (its outputs' strides are what the UNet gets
    in a job; an eager ControlNet's may differ and the UNet's graph would not match)."""
    for name in ("controlnet_openpose", "controlnet_tile"):
        forward = getattr(nets.get(name), "forward", None)
        if isinstance(forward, StaticForward) and b.batch in forward.batches.get((b.height, b.width), []):
            return nets[name]
    return nets["controlnet_openpose"] or nets["controlnet_tile"]


def _residual_shapes(cn, sample, t, hidden, b: Bucket):
    """ControlNet residuals of the bucket's shape, made the way the pipelines make them (by a
    ControlNet call of the same bucket, so strides and dtypes match what the UNet then gets)."""
    cond = torch.rand(b.batch, 3, b.height * 8, b.width * 8, device=sample.device, dtype=sample.dtype)
    return cn(sample, t, encoder_hidden_states=hidden, controlnet_cond=cond, conditioning_scale=1.0,
              guess_mode=False, return_dict=False)  # fmt: skip


def freeze_compiled() -> None:
    """From now on no new graph is compiled: shapes outside the buckets run eagerly (a compile
    would stall a user's job for a minute). Undo with `torch.compiler.set_stance("default")`."""
    torch.compiler.set_stance("eager_on_recompile")
