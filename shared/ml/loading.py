"""Load the models a worker keeps resident: base pipeline, ControlNets, upscaler.

One loader path for every preset: `tiny` resolves to folders built by shared/ml/tiny.py, `sd15`
to the verified weights of the manifest (shared/ml/registry.py). Loaded models are cached per
process. Nothing touches CUDA at import time, so a parent process can fork workers safely.
"""

from __future__ import annotations

import threading
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from shared.config import get_settings
from shared.ml import registry, tiny
from shared.ml.quiet import quiet_model_logs

if TYPE_CHECKING:
    import torch
    from diffusers import ControlNetModel, StableDiffusionPipeline
    from spandrel import ImageModelDescriptor

Role = Literal["base", "controlnet_openpose", "controlnet_tile", "upscaler"]
_lock = threading.RLock()


def resolve_device(device: str | None = None) -> str:
    device = device or get_settings().device
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def dtype_for(device: str) -> torch.dtype:
    import torch

    return torch.float16 if device.startswith("cuda") else torch.float32


def current_preset(preset: str | None = None) -> str:
    preset = preset or get_settings().model_preset
    if preset not in ("tiny", "sd15"):
        raise registry.ModelError(f"unknown model preset {preset!r}: use 'tiny' or 'sd15'")
    return preset


def model_path(role: Role, preset: str | None = None) -> Path:
    """Where the model of `role` lives for `preset` (built or verified, never downloaded)."""
    if current_preset(preset) == "tiny":
        return tiny.ensure_built()[role]
    return registry.resolve(registry.default_name(role))


def preset_info(preset: str | None = None) -> dict:
    preset = current_preset(preset)
    demo = preset == "tiny"
    message = (
        "demo models: images are noise"
        if demo
        else f"base model {registry.default_name('base')} (Stable Diffusion 1.5)"
    )
    return {"model_preset": preset, "demo": demo, "message": message}


def base_model_id(preset: str | None = None) -> str:
    """A stable identifier of the base weights (stored with trained likenesses)."""
    preset = current_preset(preset)
    return f"tiny-v{tiny.VERSION}" if preset == "tiny" else registry.default_name("base")


def load_pipeline(preset: str | None, device: str, *, dtype: torch.dtype) -> StableDiffusionPipeline:
    """A fresh, uncached copy of the base pipeline of `preset` (e.g. for training, which attaches
    adapters and changes grad flags); a single-file base gets its config folder from the manifest."""
    path = model_path("base", preset)
    config = registry.resolve(registry.default_name("base_config")) if path.is_file() else None
    return load_pipeline_from(path, device=device, dtype=dtype, config=config)


# -- loaders: each takes a path, so real and tiny weights go through the same code ----------------


def load_pipeline_from(
    path: Path, *, device: str, dtype: torch.dtype, config: Path | None = None
) -> StableDiffusionPipeline:
    """A diffusers folder, or a single-file `.safetensors`/`.ckpt` checkpoint (A1111/civitai
    layout) whose component configs come from `config` (a diffusers folder, weights not needed)."""
    from diffusers import StableDiffusionPipeline

    quiet_model_logs()
    common = {"dtype": dtype, "safety_checker": None, "requires_safety_checker": False}
    if path.is_dir():
        pipe = StableDiffusionPipeline.from_pretrained(
            path, local_files_only=True, variant=fp16_variant(path), **common
        )
    else:
        if config is None:
            raise registry.ModelError(f"single-file checkpoint {path} needs a config folder")
        pipe = StableDiffusionPipeline.from_single_file(
            str(path), config=str(config), local_files_only=True, **common
        )
    pipe.set_progress_bar_config(disable=True)
    # diffusers uses torch's scaled_dot_product_attention (AttnProcessor2_0) by default.
    return pipe.to(device)


def load_controlnet_from(path: Path, *, device: str, dtype: torch.dtype) -> ControlNetModel:
    """A diffusers ControlNet folder; only its safetensors weights are read (a hub `.bin` next to
    them is the pinned download that shared/ml/convert.py turned into safetensors, weights-only)."""
    from diffusers import ControlNetModel

    quiet_model_logs()
    model = ControlNetModel.from_pretrained(
        path, dtype=dtype, local_files_only=True, variant=fp16_variant(path), use_safetensors=True
    )
    return model.to(device)


def fp16_variant(folder: Path) -> str | None:
    """ "fp16" when a diffusers folder holds only fp16-variant weights (`*.fp16.safetensors`, as the
    hub's fp16 downloads in manifest.yaml do), else None; diffusers finds those files only when
    asked for the variant."""
    weights = list(folder.rglob("*.safetensors"))
    return "fp16" if weights and all(w.name.endswith(".fp16.safetensors") for w in weights) else None


def load_upscaler_from(path: Path, *, device: str) -> ImageModelDescriptor:
    from spandrel import ImageModelDescriptor, ModelLoader

    model = ModelLoader(device=device).load_from_file(str(path))
    if not isinstance(model, ImageModelDescriptor):
        raise registry.ModelError(f"{path} is not an image-to-image model")
    if device.startswith("cuda") and model.supports_half:
        model.model.half()
    return model.eval()


# -- resident, cached per process -----------------------------------------------------------------


def load_base_pipeline(preset: str | None = None, device: str | None = None) -> StableDiffusionPipeline:
    """The resident base txt2img pipeline: fp16 on CUDA, fp32 on CPU. Derive img2img, inpaint and
    ControlNet pipelines from its components (`from_pipe`) instead of loading again."""
    return _base(current_preset(preset), resolve_device(device))


@cache
def _base(preset: str, device: str) -> StableDiffusionPipeline:
    with _lock:
        return load_pipeline(preset, device, dtype=dtype_for(device))


def load_controlnet(
    kind: Literal["openpose", "tile"], preset: str | None = None, device: str | None = None
) -> ControlNetModel:
    if kind not in ("openpose", "tile"):
        raise registry.ModelError(f"unknown ControlNet {kind!r}: use 'openpose' or 'tile'")
    return _controlnet(kind, current_preset(preset), resolve_device(device))


@cache
def _controlnet(kind: str, preset: str, device: str) -> ControlNetModel:
    with _lock:
        path = model_path(f"controlnet_{kind}", preset)
        return load_controlnet_from(path, device=device, dtype=dtype_for(device))


def load_upscaler(preset: str | None = None, device: str | None = None) -> ImageModelDescriptor:
    return _upscaler(current_preset(preset), resolve_device(device))


@cache
def _upscaler(preset: str, device: str) -> ImageModelDescriptor:
    with _lock:
        return load_upscaler_from(model_path("upscaler", preset), device=device)
