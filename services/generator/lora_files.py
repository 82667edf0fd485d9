"""A LoRA file checked before it touches the resident model: readable, made for this base, of a
kind the product applies. What A1111 and ComfyUI load is what we load:

- kohya/A1111 keys (`lora_unet_<diffusers path>`, `lora_te_text_model_<CLIP path>`): LoRA and
  LoCon go through diffusers' loader; a file with any LyCORIS LoHa / LoKr / full-diff module is
  baked instead (services/generator/lycoris.py computes the deltas as ComfyUI does);
- diffusers/peft keys (`unet.<path>.lora_A.weight`, `text_encoder.<path>...`).

Compiled pipelines bake every file they can (`LoraFile.direct`): the deltas are computed from the
file's tensors and added to the weights in place (`baked_deltas`), which costs a few milliseconds
where peft's loader spends about a second building adapter layers only to fuse and drop them.
peft stays the path for diffusers files whose scale is not one number per component.

`inspect_lora` reads only the safetensors header (names, shapes, metadata) and raises
`UnusableLora` with a sentence naming the file and the reason: not a safetensors file, made for
SDXL or SD 2.x (by its metadata, its SDXL text-encoder keys, or module shapes that differ from
this model's), a textual-inversion embedding, or a kind no path applies (DoRA, OFT, ...).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from services.generator import lycoris

log = logging.getLogger(__name__)
SUPPORTED = "LoRA, LoCon, LoHa, LoKr and full-diff files for SD-1.5"


# diffusers/peft key endings: (suffix, the weight dim it must match): down/A the in features
DIFFUSERS_SUFFIXES = (
    (".lora_A.weight", 1),
    (".lora_B.weight", 0),
    (".lora.down.weight", 1),
    (".lora.up.weight", 0),
    (".lora_linear_layer.down.weight", 1),
    (".lora_linear_layer.up.weight", 0),
)


class UnusableLora(ValueError):
    """A LoRA file the product cannot apply; `str()` is the English sentence for the person who
    chose it, `sentence` the same in the catalogue (shared/i18n.py) for other languages.
    `style_lora`: the style's name of the LoRA; None for the user's likeness LoRA."""

    def __init__(self, style_lora: str | None, path: Path, reason: str):
        from shared.i18n import Sentence

        self.style_lora = style_lora
        self.file = Path(path).name
        self.reason = reason
        if style_lora is None:
            self.sentence = Sentence("job.unusable_likeness_lora", {"file": self.file, "reason": reason})
        else:
            values = {"name": style_lora, "file": self.file, "reason": reason}
            self.sentence = Sentence("job.unusable_style_lora", values)
        super().__init__(self.sentence.render("en"))


@dataclass
class LoraFile:
    """A checked LoRA file. `modules`: kohya module prefix (diffusers layout: the `lora_A` key)
    -> (component, module path) for the modules this model has; `bake`: apply by weight deltas
    (LyCORIS kinds) instead of peft, in every mode; `direct`: may be baked by weight deltas when
    the caller bakes anyway (BakedLoras)."""

    path: Path
    layout: str  # "kohya" | "diffusers"
    kinds: set[str] = field(default_factory=set)
    modules: dict[str, tuple[str, str]] = field(default_factory=dict)
    module_kinds: dict[str, str] = field(default_factory=dict)
    unmapped: list[str] = field(default_factory=list)
    tucker: bool = False  # LoCon with `lora_mid` (diffusers' loader does not read it)
    # diffusers layout: alpha / rank per component when the file's scale is that simple, else None
    scales: dict[str, float] | None = None

    @property
    def bake(self) -> bool:
        return bool(self.kinds - {"lora"}) or self.tucker

    @property
    def direct(self) -> bool:
        return self.layout == "kohya" or self.scales is not None


def _components(pipe) -> dict[str, torch.nn.Module]:
    return {"unet": pipe.unet, "text_encoder": pipe.text_encoder}


def kohya_module_map(pipe) -> dict[str, tuple[str, str]]:
    """kohya module prefix -> (component, module path), for every Linear/Conv2d of the UNet and
    the text encoder. UNet: `lora_unet_` + the diffusers path with "_" for "." (sd-scripts' SD-1.x
    names, what ComfyUI maps too). Text encoder: `lora_te_text_model_` + the CLIP path below
    `text_model` (transformers 5 no longer nests it), and `lora_te_` + the path as written by
    LyCORIS on a transformers-5 model."""
    out: dict[str, tuple[str, str]] = {}
    for component, model in _components(pipe).items():
        for name, module in model.named_modules():
            if not isinstance(module, torch.nn.Linear | torch.nn.Conv2d) or ".lora_" in name:
                continue
            flat = name.removeprefix("_orig_mod.").replace(".base_layer", "")
            if component == "unet":
                out["lora_unet_" + flat.replace(".", "_")] = (component, name)
            else:
                below = flat.removeprefix("text_model.").replace(".", "_")
                out["lora_te_text_model_" + below] = (component, name)
                out["lora_te_" + below] = (component, name)
    return out


def _read_header(path: Path, style_lora: str | None) -> tuple[dict[str, tuple[int, ...]], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise UnusableLora(style_lora, path, "the file does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
            return shapes, dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        reason = f"it is not a readable safetensors file, it may be damaged or incomplete ({exc})"
        raise UnusableLora(style_lora, path, reason[:300]) from exc


def _other_base(metadata: dict[str, str], keys: list[str]) -> str | None:
    """'SDXL' / 'SD 2.x' when the metadata or the key names say so (sd-scripts, sai model spec)."""
    version = metadata.get("ss_base_model_version", "").lower()
    architecture = metadata.get("modelspec.architecture", "").lower()
    if version.startswith("sdxl") or "xl" in architecture or metadata.get("ss_sdxl") == "True":
        return "SDXL"
    if any(k.startswith(("lora_te1_", "lora_te2_", "text_encoder_2.")) for k in keys):
        return "SDXL"
    if (
        version.startswith("sd_v2")
        or metadata.get("ss_v2") == "True"
        or "stable-diffusion-v2" in architecture
    ):
        return "SD 2.x"
    return None


def inspect_lora(path: Path, pipe, style_lora: str | None) -> LoraFile:
    """Check a LoRA file against `pipe`'s UNet and text encoder from its header alone.
    Raises UnusableLora (a sentence naming the style's LoRA, or the likeness when
    `style_lora` is None, and the file) when it cannot apply."""
    path = Path(path)
    shapes, metadata = _read_header(path, style_lora)
    keys = list(shapes)
    if not keys:
        raise UnusableLora(style_lora, path, "it holds no tensors")
    if any(k in ("emb_params", "string_to_param.*") or k.startswith("string_to_param") for k in keys):
        raise UnusableLora(style_lora, path, "it is a textual-inversion embedding, not a LoRA")
    other = _other_base(metadata, keys)
    if other:
        raise UnusableLora(style_lora, path, f"it was made for {other}, and portraits are made with SD-1.5")
    if any(k.startswith(("lora_unet_", "lora_te_")) for k in keys):
        result = _inspect_kohya(path, pipe, style_lora, shapes)
    elif any(k.startswith(("unet.", "text_encoder.")) for k in keys):
        result = _inspect_diffusers(path, pipe, style_lora, shapes, metadata)
    else:
        raise UnusableLora(style_lora, path, f"it holds no LoRA weights this product knows ({SUPPORTED} can)")
    if result.unmapped:  # A1111 and ComfyUI skip them too ("lora key not loaded")
        log.warning("%s: %d modules not in this model, skipped: %s", path.name, len(result.unmapped),
                    ", ".join(result.unmapped[:5]))  # fmt: skip
    return result


def _dims(shape) -> str:
    return "x".join(map(str, shape))


def _check_shape(style_lora, path, module: str, got: tuple[int, ...], weight: torch.Tensor) -> None:
    numel = 1
    for d in got:
        numel *= d
    if got[0] != weight.shape[0] or numel != weight.numel():
        raise UnusableLora(
            style_lora,
            path,
            f"it was made for another base model than SD-1.5: its module {module} is "
            f"{_dims(got)}, this model's is {_dims(weight.shape)}",
        )


def _inspect_kohya(path: Path, pipe, style_lora: str | None, shapes: dict[str, tuple[int, ...]]) -> LoraFile:
    by_module: dict[str, dict[str, tuple[int, ...]]] = {}
    for key, shape in shapes.items():
        prefix, _, suffix = key.partition(".")
        by_module.setdefault(prefix, {})[suffix] = shape
    known = kohya_module_map(pipe)
    models = _components(pipe)
    result = LoraFile(path, "kohya")
    for module, parts in by_module.items():
        unsupported = [name for s, name in lycoris.UNSUPPORTED_SUFFIXES.items() if s in parts]
        if unsupported:
            why = f"it holds {unsupported[0]} weights, which cannot be applied yet ({SUPPORTED} can)"
            raise UnusableLora(style_lora, path, why)
        kind = lycoris.module_kind(set(parts))
        if kind is None:
            continue  # e.g. a lone alpha
        if module not in known:
            result.unmapped.append(module)
            continue
        component, name = known[module]
        weight = models[component].get_submodule(name).weight
        try:
            got = lycoris.delta_shape(kind, parts)
        except (KeyError, IndexError) as exc:
            raise UnusableLora(
                style_lora, path, f"its {kind} module {module} is incomplete ({exc} missing)"
            ) from exc
        _check_shape(style_lora, path, module, got, weight)
        result.kinds.add(kind)
        result.tucker |= "lora_mid.weight" in parts
        result.modules[module] = (component, name)
        result.module_kinds[module] = kind
    if not result.modules:
        raise UnusableLora(
            style_lora,
            path,
            f"none of its {len(by_module)} modules is in this SD-1.5 model "
            f"(e.g. {next(iter(by_module))}): it was made for another kind of model",
        )
    return result


def _inspect_diffusers(
    path: Path, pipe, style_lora: str | None, shapes: dict[str, tuple[int, ...]], metadata: dict[str, str]
) -> LoraFile:
    models = _components(pipe)
    result = LoraFile(path, "diffusers", kinds={"lora"})
    for key, shape in shapes.items():
        component, _, rest = key.partition(".")
        for suffix, dim in DIFFUSERS_SUFFIXES:
            if not rest.endswith(suffix):
                continue
            module = rest.removesuffix(suffix)
            weight = _find_weight(models.get(component), module)
            if weight is None:
                result.unmapped.append(key)
            elif len(shape) < 2 or shape[dim] != weight.shape[dim]:
                raise UnusableLora(
                    style_lora,
                    path,
                    f"it was made for another base model than SD-1.5: its {key} is "
                    f"{_dims(shape)}, this model's {module} is {_dims(weight.shape)}",
                )
            else:
                result.modules[key] = (component, module)
    if not result.modules and result.unmapped:
        raise UnusableLora(
            style_lora, path, "none of its modules is in this SD-1.5 model: it was made for another model"
        )
    result.scales = _plain_scales(models, shapes, metadata)
    # one entry per module (its down / A key), as kohya files have one per module prefix
    downs = tuple(down for down, _ in DIFFUSERS_PAIRS)
    result.modules = {k: v for k, v in result.modules.items() if k.endswith(downs)}
    return result


# diffusers/peft names of one Linear LoRA's factors: (down / A, up / B)
DIFFUSERS_PAIRS = (
    (".lora_A.weight", ".lora_B.weight"),
    (".lora.down.weight", ".lora.up.weight"),
    (".lora_linear_layer.down.weight", ".lora_linear_layer.up.weight"),
)


def _plain_scales(
    models: dict[str, torch.nn.Module], shapes: dict[str, tuple[int, ...]], metadata: dict[str, str]
) -> dict[str, float] | None:
    """{component: lora_alpha / r} when every module of a diffusers/peft file is a Linear LoRA
    (down/up pairs, `DIFFUSERS_PAIRS`, of one rank per component) of a component in `models` (the
    pipeline's `_components`) and its scale is one number per component: diffusers'
    `lora_adapter_metadata` (peft's LoraConfig of each component) without rank or alpha patterns,
    DoRA or rsLoRA, or no metadata at all (diffusers then takes alpha == rank). None: anything else,
    which peft's own loader applies."""
    import json

    ranks: dict[str, set[int]] = {}
    for key, shape in shapes.items():
        component, _, rest = key.partition(".")
        if len(shape) != 2:
            return None  # conv LoRAs: peft decides
        if rest.endswith(tuple(down for down, _ in DIFFUSERS_PAIRS)):
            ranks.setdefault(component, set()).add(shape[0])
        elif not rest.endswith(tuple(up for _, up in DIFFUSERS_PAIRS)):
            return None  # alphas, DoRA magnitudes, biases: peft decides
    try:
        config = json.loads(metadata.get("lora_adapter_metadata") or "{}")
    except ValueError:
        return None
    if not isinstance(config, dict):
        return None
    scales = {}
    for component, found in ranks.items():
        if len(found) != 1 or not isinstance(models.get(component), torch.nn.Module):
            return None
        rank = found.pop()
        r, alpha = config.get(f"{component}.r", rank), config.get(f"{component}.lora_alpha", rank)
        plain = not any(
            config.get(f"{component}.{k}")
            for k in ("rank_pattern", "alpha_pattern", "use_dora", "use_rslora")
        )
        if not plain or r != rank or not isinstance(alpha, int | float):
            return None
        scales[component] = float(alpha) / rank
    return scales


def _find_weight(model: torch.nn.Module | None, module: str) -> torch.Tensor | None:
    if model is None:
        return None
    for candidate in (module, module.removeprefix("text_model."), "text_model." + module):
        try:
            return model.get_submodule(candidate).weight
        except AttributeError:
            continue
    return None


def baked_deltas(
    lora: LoraFile, pipe, unet_strength: float, te_strength: float
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(parameter, delta to add) for each module of a checked file with `direct` or `bake`: the
    delta is float32 on the parameter's device, `strength * alpha / rank * reconstructed delta`,
    the UNet's modules at `unet_strength`, the text encoder's at `te_strength` (A1111's te/unet).
    kohya/LyCORIS files as ComfyUI computes them; diffusers files as peft's `fuse_lora` does
    (`B @ A * lora_alpha / r * adapter weight`, peft/tuners/lora/layer.py `get_delta_weight`)."""
    from safetensors import safe_open

    models = _components(pipe)
    if lora.layout == "diffusers":
        yield from _diffusers_deltas(lora, models, {"unet": unet_strength, "text_encoder": te_strength})
        return
    with safe_open(str(lora.path), framework="pt") as f:
        names = set(f.keys())  # noqa: SIM118
        for module, (component, name) in lora.modules.items():
            target = models[component].get_submodule(name)
            if hasattr(target, "get_base_layer"):  # a peft layer: its base holds the weight
                target = target.get_base_layer()
            kind = lora.module_kinds[module]
            wanted = (*lycoris.KIND_SUFFIXES[kind], "alpha")
            tensors = {s: f.get_tensor(f"{module}.{s}") for s in wanted if f"{module}.{s}" in names}
            strength = unet_strength if component == "unet" else te_strength
            device = target.weight.device
            delta, bias = lycoris.module_delta(
                kind, {k: v.to(device) for k, v in tensors.items()}, target.weight.shape
            )
            yield target.weight, delta * strength
            if bias is not None and target.bias is not None:
                yield target.bias, bias.reshape(target.bias.shape) * strength


def _diffusers_deltas(
    lora: LoraFile, models: dict[str, torch.nn.Module], strengths: dict[str, float]
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """`baked_deltas` for a diffusers/peft file whose `scales` are known."""
    from safetensors import safe_open

    assert lora.scales is not None, "only files with plain scales are baked directly"
    with safe_open(str(lora.path), framework="pt") as f:
        for key, (component, module) in lora.modules.items():
            weight = _find_weight(models[component], module)
            if weight is None:
                continue
            down_suffix, up_suffix = next(pair for pair in DIFFUSERS_PAIRS if key.endswith(pair[0]))
            down = f.get_tensor(key).to(weight.device, torch.float32)
            up = f.get_tensor(key.removesuffix(down_suffix) + up_suffix).to(weight.device, torch.float32)
            yield weight, (up @ down) * (lora.scales[component] * strengths[component])
