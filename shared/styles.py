"""Portrait styles are data: one YAML file per style in `styles/`, validated here.

A style fixes everything a generation needs besides the user's likeness and the seed:
prompts, style LoRAs, the pose template and the parameters of each of the five stages.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

STYLES_DIR = Path(__file__).resolve().parent / "styles"
SAMPLERS = ("DPM++ 2M Karras", "Euler a", "Euler", "DDIM", "UniPC")


class StyleError(ValueError):
    """A style file is missing or invalid; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Localized(_Strict):
    """A text a person reads, in every language of the product (shared/i18n.py LOCALES)."""

    en: str = Field(min_length=1)
    ko: str = Field(min_length=1)

    def get(self, locale: str) -> str:
        """The text in `locale`, English for a language it does not have."""
        return getattr(self, locale, None) or self.en


class StyleLora(_Strict):
    name: str = Field(min_length=1)  # a LoRA of the model manifest
    weight: float = Field(ge=-2.0, le=2.0)


class Txt2ImgParams(_Strict):
    steps: int = Field(ge=1, le=150)
    cfg: float = Field(ge=1.0, le=30.0)
    sampler: str = "DPM++ 2M Karras"
    width: int = Field(ge=64, le=2048, multiple_of=64)
    height: int = Field(ge=64, le=2048, multiple_of=64)
    controlnet_scale: float = Field(ge=0.0, le=2.0)

    @field_validator("sampler")
    @classmethod
    def _known_sampler(cls, value: str) -> str:
        if value not in SAMPLERS:
            raise ValueError(f"unknown sampler {value!r}; one of {', '.join(SAMPLERS)}")
        return value


class DetailerPass(_Strict):
    """ADetailer's settings for one detector (face or hand)."""

    detector: Literal["face", "hand"]
    prompt: str  # "{likeness}" is replaced by the likeness trigger words (face pass)
    negative_prompt: str = ""
    confidence: float = Field(default=0.3, ge=0.0, le=1.0)
    denoise: float = Field(ge=0.0, le=1.0)
    steps: int = Field(default=20, ge=1, le=150)
    cfg: float = Field(default=7.0, ge=1.0, le=30.0)
    mask_dilate: int = Field(default=4, ge=0, le=64)
    mask_blur: int = Field(default=4, ge=0, le=64)
    padding: int = Field(default=32, ge=0, le=256)
    size: int = Field(default=512, ge=64, le=1024, multiple_of=64)
    max_boxes: int = Field(default=4, ge=1, le=16)


class BeautifyParams(_Strict):
    prompt: str
    negative_prompt: str = ""
    denoise: float = Field(ge=0.3, le=0.45)  # the recipe: tone and colour, not a new picture
    steps: int = Field(ge=1, le=150)
    cfg: float = Field(ge=1.0, le=30.0)


class UpscaleParams(_Strict):
    upscaler: str = "realesrgan_x4plus"  # an ESRGAN model of the manifest
    factor: float = Field(ge=1.0, le=4.0)
    denoise: float = Field(ge=0.0, le=0.5)
    steps: int = Field(ge=1, le=150)
    cfg: float = Field(ge=1.0, le=30.0)
    tile: int = Field(default=512, ge=64, le=1024, multiple_of=64)
    padding: int = Field(default=32, ge=0, le=256)
    mask_blur: int = Field(default=8, ge=0, le=64)
    controlnet_scale: float = Field(default=1.0, ge=0.0, le=2.0)


Colour = Annotated[str, Field(pattern=r"^#[0-9a-f]{6}$")]


class Look(_Strict):
    """What the style's sample card shows (services/generator/style_cards.py draws it): the colours,
    the light and the scene of its prompt, over the silhouette of its pose template. A drawing, not a
    generated picture: it says what the style is for without model weights."""

    backdrop: tuple[Colour, Colour]  # top and bottom of the backdrop
    wardrobe: Colour
    skin: Colour
    light: Literal["left", "right", "front", "back", "soft"]  # where the key light comes from
    light_colour: Colour = "#ffffff"
    scene: Literal["studio", "window", "street", "park", "colour_block"] = "studio"
    accent: Colour | None = None  # a second colour of the scene (colour block, foliage, street)


class Style(_Strict):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    name: Localized
    description: Localized
    # The style's preview picture (SVG/JPEG/PNG/WebP) relative to styles/, or null. What ships is the
    # drawn sample card of `look` (previews/<id>.svg, made by `python -m services.generator.style_cards`):
    # pictures from random or tiny weights would be noise and misstate what the style makes.
    preview: str | None = None
    look: Look | None = None
    base_model: str = Field(min_length=1)
    prompt: str = Field(min_length=1)
    negative_prompt: str = ""
    loras: tuple[StyleLora, ...] = ()
    pose: str | None = None  # a template in poses/, or null for no pose control
    txt2img: Txt2ImgParams
    detailer: tuple[DetailerPass, ...] = ()
    beautify: BeautifyParams
    upscale: UpscaleParams


def load_style_file(path: Path) -> Style:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise StyleError(f"{path.name}: cannot read: {exc}") from exc
    if not isinstance(data, dict):
        raise StyleError(f"{path.name}: expected a mapping at the top level")
    try:
        style = Style.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}" for err in exc.errors()
        )
        raise StyleError(f"{path.name}: {problems}") from exc
    if style.id != path.stem:
        raise StyleError(f"{path.name}: id {style.id!r} must equal the file name {path.stem!r}")
    _check_loras(style, path.name)
    if style.preview is not None:
        preview_path(style, path.parent)
    return style


PREVIEW_TYPES = {
    ".svg": "image/svg+xml",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
}


def preview_path(style: Style, folder: Path = STYLES_DIR) -> Path:
    """The style's preview image file inside `folder`; raises StyleError if the style names none,
    or one that is missing, outside the folder or not a JPEG/PNG/WebP file."""
    if style.preview is None:
        raise StyleError(f"{style.id}: no preview")
    path = (folder / style.preview).resolve()
    if not path.is_relative_to(folder.resolve()) or path.suffix.lower() not in PREVIEW_TYPES:
        raise StyleError(
            f"{style.id}.yaml: preview must be a .svg, .jpg, .png or .webp file inside {folder.name}/"
        )
    if not path.is_file():
        raise StyleError(f"{style.id}.yaml: preview {style.preview!r} does not exist")
    return path


def _check_loras(style: Style, file: str) -> None:
    """Every LoRA a style names (its `loras` and `<lora:...>` tags in its prompt) is a LoRA of the
    model manifest, and no other prompt carries LoRA tags; raises StyleError naming the file.
    Checked when styles load, so a bad style never reaches a job (weights may still be absent:
    the tiny preset skips them)."""
    from shared.extra_networks import LORA_TAGS, extract_loras
    from shared.ml.registry import ModelError, get_spec

    try:
        _, tags = extract_loras(style.prompt)
    except ValueError as exc:
        raise StyleError(f"{file}: prompt: {exc}") from exc
    for name in [lora.name for lora in style.loras] + [tag.name for tag in tags]:
        try:
            kind = get_spec(name).kind
        except ModelError as exc:
            raise StyleError(f"{file}: LoRA {name!r} is not a model of the manifest ({exc})") from exc
        if kind != "lora":
            raise StyleError(f"{file}: {name!r} is a {kind}, not a LoRA")
    others = [style.negative_prompt, style.beautify.prompt, style.beautify.negative_prompt]
    others += [text for p in style.detailer for text in (p.prompt, p.negative_prompt)]
    if any(f"<{kind}:" in text for text in others for kind in LORA_TAGS):
        raise StyleError(f"{file}: <lora:...> tags are only allowed in the main prompt")


@cache
def load_styles(directory: Path = STYLES_DIR) -> dict[str, Style]:
    """Every style in `directory`, by id, sorted by id."""
    paths = sorted(directory.glob("*.yaml"))
    if not paths:
        raise StyleError(f"no styles in {directory}")
    return {style.id: style for style in map(load_style_file, paths)}


def get_style(style_id: str, directory: Path = STYLES_DIR) -> Style:
    styles = load_styles(directory)
    if style_id not in styles:
        raise StyleError(f"unknown style {style_id!r}; known: {', '.join(styles)}")
    return styles[style_id]
