"""PNG metadata: A1111's `parameters` text chunk (readable by A1111's PNG Info and civitai) and
a JSON chunk with everything needed to reproduce the portrait.

The `parameters` text is what A1111 and its extensions write for the closest run A1111 can do:
the txt2img pass with the LoRAs (`<lora:FILESTEM:w>`, `Lora hashes` by A1111's rule),
sd-webui-controlnet's unit (`ControlNet 0`), ADetailer's face and hand units and Ultimate SD
Upscale's keys. The product's passes A1111 has no place for (beautify, the second detailer pass,
the upscale's denoise) go under the `Portrait Studio` key as JSON; there is no top-level
`Denoising strength`, which A1111's txt2img paste reads as "Hires fix on". See
docs/a1111-comfyui.md for what each tool reproduces."""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image, PngImagePlugin

JSON_KEY = "portrait-studio"
PRODUCT_KEY = "Portrait Studio"  # A1111 keeps unknown keys in PNG Info and ignores them on paste
# The names of the product's ControlNets in sd-webui-controlnet's model list (the .pth files of
# lllyasviel/ControlNet-v1-1 the diffusers folders were converted from, with the extension's
# short hash), and A1111's names of the product's upscalers.
A1111_CONTROLNET = {
    "openpose": "control_v11p_sd15_openpose [cab727d4]",
    "tile": "control_v11f1e_sd15_tile [a371b31b]",
}
A1111_UPSCALERS = {"realesrgan_x4plus": "R-ESRGAN 4x+", "4x_ultrasharp": "4x-UltraSharp"}
ADETAILER_SUFFIXES = ("", " 2nd", " 3rd", " 4th")  # ADetailer's units: its ordinal suffixes


def a1111_parameters(prompt: str, negative_prompt: str, settings: dict[str, object]) -> str:
    """`prompt\\nNegative prompt: ...\\nSteps: 25, Sampler: ..., Seed: 1, ...` (A1111's layout)."""

    def value(v: object) -> str:  # A1111's infotext_utils.quote
        text = str(v)
        return json.dumps(text, ensure_ascii=False) if ("," in text or ":" in text or "\n" in text) else text

    line = ", ".join(f"{k}: {value(v)}" for k, v in settings.items() if v is not None)
    return f"{prompt}\nNegative prompt: {negative_prompt}\n{line}"


def a1111_network_alias(name: str) -> str:
    """A network's name as A1111 writes it in `Lora hashes`: without ":" and "," (its
    extra_networks_lora.py), which would split the `name: hash, name: hash` list wrongly."""
    return name.replace(":", "").replace(",", "")


def a1111_lora_tag(name: str, weight: float, te_weight: float | None = None) -> str:
    """`<lora:name:w>`, or `<lora:name:te:unet>` when the text encoder has its own weight; the name
    as in `Lora hashes`, without "<" and ">" either (they would end the tag)."""
    alias = a1111_network_alias(name).replace("<", "").replace(">", "")
    if te_weight is None or te_weight == weight:
        return f"<lora:{alias}:{weight:g}>"
    return f"<lora:{alias}:{te_weight:g}:{weight:g}>"


def a1111_lora_hash(path: Path) -> str:
    """The 12-hex hash A1111 lists a LoRA file under (extensions-builtin/Lora/network.py
    NetworkOnDisk: `sshs_model_hash` of its metadata, else modules/hashes.py's addnet hash, the
    sha256 of the bytes after the safetensors header; `shorthash` = the first 12 characters).
    A likeness's diffusers file carries its kohya file's hash (`studio_kohya_sshs_model_hash`):
    the user downloads that file."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    full = meta.get("studio_kohya_sshs_model_hash") or meta.get("sshs_model_hash")
    if not full:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            f.seek(8 + int.from_bytes(f.read(8), "little"))
            while block := f.read(1 << 22):
                digest.update(block)
        full = digest.hexdigest()
    return full[:12]


def controlnet_unit(model: str, weight: float, module: str = "none") -> str:
    """sd-webui-controlnet's infotext of one unit (`ControlNet N: "Module: ..., Model: ..."`).
    Module "none": the control image is used as given (the product draws the pose skeleton)."""
    fields = {
        "Module": module,
        "Model": model,
        "Weight": f"{weight:g}",
        "Resize Mode": "Crop and Resize",
        "Low Vram": "False",
        "Processor Res": "512",
        "Guidance Start": "0.0",
        "Guidance End": "1.0",
        "Pixel Perfect": "False",
        "Control Mode": "Balanced",
    }
    return ", ".join(f"{k}: {v}" for k, v in fields.items())


def adetailer_unit(index: int, *, model: str, prompt: str, negative_prompt: str, params) -> dict[str, object]:
    """ADetailer's infotext keys of its unit `index` (0: no suffix, 1: " 2nd", ...), as
    Bing-su/adetailer's args.py ADetailerArgs.extra_params writes them (defaults left out).
    `params` is a shared.styles.DetailerPass."""
    unit = {
        "ADetailer model": model,
        "ADetailer prompt": prompt or None,
        "ADetailer negative prompt": negative_prompt or None,
        "ADetailer confidence": params.confidence,
        "ADetailer dilate erode": params.mask_dilate,
        "ADetailer mask blur": params.mask_blur,
        "ADetailer denoising strength": params.denoise,
        "ADetailer inpaint only masked": True,
        "ADetailer inpaint padding": params.padding,
        "ADetailer use inpaint width height": True,
        "ADetailer inpaint width": params.size,
        "ADetailer inpaint height": params.size,
        "ADetailer use separate steps": True,
        "ADetailer steps": params.steps,
        "ADetailer use separate CFG scale": True,
        "ADetailer CFG scale": params.cfg,
    }
    suffix = ADETAILER_SUFFIXES[index]
    return {key + suffix: value for key, value in unit.items()}


def png_bytes(image: Image.Image, parameters: str, meta: dict, comfyui_prompt: dict | None = None) -> bytes:
    """PNG with A1111's `parameters`, the product's JSON and, given, ComfyUI's `prompt` chunk."""
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", parameters)
    info.add_text(JSON_KEY, json.dumps(meta, sort_keys=True, separators=(",", ":")))
    if comfyui_prompt is not None:
        info.add_text("prompt", json.dumps(comfyui_prompt, separators=(",", ":")))
    buffer = io.BytesIO()
    # zlib level 1: a 1024x1536 photo in 0.21 s instead of 1.27 s at PIL's default 6, 15% larger
    # (1.89 vs 1.65 MB, skimage's astronaut upscaled, measured 2026-12-07): a portrait alone must
    # be ready in 2.5 s, and the PNG is the lossless original, the page shows JPEG thumbnails.
    image.save(buffer, format="PNG", pnginfo=info, optimize=False, compress_level=1)
    return buffer.getvalue()


def png_bytes_many(items: Sequence[tuple[Image.Image, str, dict, dict | None]]) -> list[bytes]:
    """`png_bytes(*item)` for each item, in order, encoded in parallel threads (zlib runs without
    the GIL: 8 portraits of 1024x1536 px took 0.91 s one after another and 0.49 s on 2 threads
    on a 2-core machine, time the GPU would wait for the next job)."""
    if len(items) <= 1:
        return [png_bytes(*item) for item in items]
    with ThreadPoolExecutor(max_workers=min(len(items), os.cpu_count() or 1)) as pool:
        return list(pool.map(lambda item: png_bytes(*item), items))


def read_png_metadata(data: bytes) -> tuple[str, dict]:
    with Image.open(io.BytesIO(data)) as im:
        return im.text["parameters"], json.loads(im.text[JSON_KEY])


def thumbnail_jpeg(image: Image.Image, max_side: int = 384, quality: int = 85) -> bytes:
    thumb = image.convert("RGB")
    thumb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    thumb.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
