"""PNG metadata: A1111's `parameters` text chunk (readable by A1111's PNG Info and civitai) and
a JSON chunk with everything needed to reproduce the portrait."""

from __future__ import annotations

import io
import json

from PIL import Image, PngImagePlugin

JSON_KEY = "portrait-studio"


def a1111_parameters(prompt: str, negative_prompt: str, settings: dict[str, object]) -> str:
    """`prompt\\nNegative prompt: ...\\nSteps: 25, Sampler: ..., Seed: 1, ...` (A1111's layout)."""

    def value(v: object) -> str:
        text = str(v)
        return json.dumps(text) if ("," in text or ":" in text or "\n" in text) else text

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


def png_bytes(image: Image.Image, parameters: str, meta: dict) -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", parameters)
    info.add_text(JSON_KEY, json.dumps(meta, sort_keys=True, separators=(",", ":")))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info, optimize=False)
    return buffer.getvalue()


def read_png_metadata(data: bytes) -> tuple[str, dict]:
    with Image.open(io.BytesIO(data)) as im:
        return im.text["parameters"], json.loads(im.text[JSON_KEY])


def thumbnail_jpeg(image: Image.Image, max_side: int = 384, quality: int = 85) -> bytes:
    thumb = image.convert("RGB")
    thumb.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    thumb.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
