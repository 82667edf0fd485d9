"""A job's LoRAs on the resident pipeline: loaded as named adapters with their weights, and
unloaded when the job ends, so the base weights are never changed between jobs.

Every file is checked first (services/generator/lora_files.py: a file that cannot apply raises
UnusableLora, a sentence naming it, before the model is touched). `ActiveLoras` (eager, CPU) loads
LoRA/LoCon files as peft adapters; files with LyCORIS LoHa/LoKr/full modules, which peft's loader
refuses, are baked: their deltas are added to the weights in place and the weights restored from a
snapshot afterwards. `BakedLoras` (compiled, GPU) bakes every file that allows it the same way
(about 15x faster than peft's load-fuse-unload, which builds a layer per module only to drop it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from services.generator.lora_files import LoraFile, UnusableLora, baked_deltas, inspect_lora

LIKENESS_ADAPTER = "likeness"


@dataclass(frozen=True)
class LoraSpec:
    adapter: str  # adapter name, unique within the job
    path: Path  # a .safetensors file (diffusers/peft or kohya/A1111 keys)
    weight: float  # UNet multiplier, and the text encoder's unless te_weight is given
    te_weight: float | None = None  # A1111's `<lora:name:te:unet>`: its own text-encoder weight
    name: str | None = None  # as the style named it (infotext); default: the adapter name

    @property
    def display_name(self) -> str:
        return self.name or self.adapter

    @property
    def style_lora(self) -> str | None:
        """The style's name of the file for error sentences; None for the likeness."""
        return None if self.adapter == LIKENESS_ADAPTER else self.display_name

    @property
    def te_strength(self) -> float:
        return self.weight if self.te_weight is None else self.te_weight

    def adapter_weight(self) -> float | dict[str, float]:
        """The weight for diffusers' `set_adapters`: one number, or one per component."""
        if self.te_weight is None or self.te_weight == self.weight:
            return self.weight
        return {"unet": self.weight, "text_encoder": self.te_weight}


def _check(pipe, specs: list[LoraSpec]) -> list[LoraFile]:
    """Each spec's file checked against the model; raises UnusableLora for the first that fails."""
    return [inspect_lora(spec.path, pipe, spec.style_lora) for spec in specs]


@torch.no_grad()
def _bake(pipe, spec: LoraSpec, checked: LoraFile, saved: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Add a file's deltas (lora_files.baked_deltas) to the weights in place, in float32 as ComfyUI
    does, saving each touched tensor first into `saved` (restored in reverse order by the caller)."""
    for param, delta in baked_deltas(checked, pipe, spec.weight, spec.te_strength):
        saved.append((param, param.detach().clone()))
        param.copy_((param.float() + delta).to(param.dtype))


@torch.no_grad()
def _restore_saved(saved: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
    for param, original in reversed(saved):  # later snapshots may hold earlier deltas
        param.copy_(original)
    saved.clear()


class ActiveLoras:
    """Context manager: `with ActiveLoras(pipe, specs): ...` runs with exactly these LoRAs."""

    def __init__(self, pipe, specs: list[LoraSpec]):
        names = [s.adapter for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate LoRA adapter names: {names}")
        self.pipe = pipe
        self.specs = specs
        self._saved: list[tuple[torch.Tensor, torch.Tensor]] = []  # baked LyCORIS files
        self._adapters: list[LoraSpec] = []

    def __enter__(self) -> ActiveLoras:
        if not self.specs:
            return self
        checked = _check(self.pipe, self.specs)
        try:
            for spec, lora in zip(self.specs, checked, strict=True):
                if lora.bake:
                    _bake(self.pipe, spec, lora, self._saved)
            self._adapters = [s for s, lora in zip(self.specs, checked, strict=True) if not lora.bake]
            load_adapters(self.pipe, self._adapters)
        except BaseException:
            self.pipe.unload_lora_weights()
            _restore_saved(self._saved)
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self._adapters:
            self.pipe.unload_lora_weights()  # removes the LoRA layers: the base is as loaded
        _restore_saved(self._saved)


def load_adapters(pipe, specs: list[LoraSpec]) -> None:
    """Load checked LoRA/LoCon files as peft adapters with their weights; a file diffusers'
    loader refuses (ValueError) is an UnusableLora naming it."""
    for spec in specs:
        try:
            pipe.load_lora_weights(
                str(spec.path.parent), weight_name=spec.path.name, adapter_name=spec.adapter
            )
        except (ValueError, KeyError) as exc:
            reason = f"the LoRA loader refused it ({type(exc).__name__}: {exc})"[:300]
            raise UnusableLora(spec.style_lora, spec.path, reason) from exc
    if specs:
        pipe.set_adapters([s.adapter for s in specs], [s.adapter_weight() for s in specs])


class WeightsNotRestored(RuntimeError):
    """The resident weights could not be restored after baked LoRAs: they may carry another
    user's likeness, so this process must take no more jobs (see services/generator/tasks.py)."""


_weights_damaged: str | None = None  # why, once a restore failed in this process


def check_weights_intact() -> None:
    """Raise WeightsNotRestored when an earlier restore failed in this process."""
    if _weights_damaged is not None:
        raise WeightsNotRestored(f"resident weights were not restored: {_weights_damaged}")


class BakedLoras:
    """Context manager for compiled pipelines: the job's LoRAs are fused into the weights in
    place (their deltas added directly where the file allows, `LoraFile.direct`; else through
    peft's layers, fused and removed), so module structure and parameter storage never change (no
    recompilation, CUDA graphs stay valid); the touched weights are restored bit for bit from a
    snapshot on every way out: a normal exit, and any error (CUDA OOM, a Celery soft time limit)
    raised while loading, fusing, unloading or refreshing the fused QKV projections, which
    diffusers' fuse/unfuse cannot promise. When the restore itself fails, WeightsNotRestored is
    raised and every later BakedLoras in this process refuses to start.

    `direct`: bake the deltas of each file that allows it (`LoraFile.direct`). False: such files
    go through peft's load-fuse-unload instead (files only baking applies, `LoraFile.bake`, are
    still baked), the old path, for benches and tests to compare against."""

    def __init__(self, pipe, specs: list[LoraSpec], *, direct: bool = True):
        ActiveLoras(pipe, specs)  # same validation
        self.pipe = pipe
        self.specs = specs
        self.direct = direct
        self._saved: list[tuple[torch.nn.Parameter, torch.Tensor]] = []

    def __enter__(self) -> BakedLoras:
        check_weights_intact()
        if not self.specs:
            return self
        try:
            self._fuse()
        except BaseException:
            self._restore()  # raises WeightsNotRestored if it cannot
            raise
        return self

    def _fuse(self) -> None:
        from peft.tuners.tuners_utils import BaseTunerLayer

        checked = _check(self.pipe, self.specs)  # before anything changes
        baked = [lora.bake or (self.direct and lora.direct) for lora in checked]
        for spec, lora, bake in zip(self.specs, checked, baked, strict=True):
            if bake:  # deltas in place, snapshots in self._saved
                _bake(self.pipe, spec, lora, self._saved)
        # peft only for what cannot be baked directly (diffusers files with rank/alpha patterns...)
        adapters = [spec for spec, bake in zip(self.specs, baked, strict=True) if not bake]
        if not adapters:
            _refresh_fused_projections(self.pipe)
            return
        with ActiveLoras(self.pipe, adapters):  # loads; unloads on any error below
            for component in (self.pipe.unet, self.pipe.text_encoder):
                for module in component.modules():
                    if isinstance(module, BaseTunerLayer):
                        weight = module.get_base_layer().weight
                        self._saved.append((weight, weight.detach().clone()))
            self.pipe.fuse_lora(components=["unet", "text_encoder"], lora_scale=1.0)
        # ActiveLoras' exit ran unload_lora_weights: the fused deltas stay in the weights.
        _refresh_fused_projections(self.pipe)

    def __exit__(self, *exc) -> None:
        if self.specs:
            self._restore()

    def _restore(self) -> None:
        """Remove any LoRA layer left behind, copy the snapshot back, refresh fused QKV."""
        global _weights_damaged
        try:
            if any(_has_lora_layers(c) for c in (self.pipe.unet, self.pipe.text_encoder)):
                self.pipe.unload_lora_weights()
            _restore_saved(self._saved)  # in reverse: a LoRA snapshot may hold a LyCORIS delta
            _refresh_fused_projections(self.pipe)
        except BaseException as exc:
            _weights_damaged = f"{type(exc).__name__}: {exc}"[:300]
            raise WeightsNotRestored(f"resident weights were not restored: {_weights_damaged}") from exc


def _has_lora_layers(module: torch.nn.Module) -> bool:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return any(isinstance(m, BaseTunerLayer) for m in module.modules())


@torch.no_grad()
def _refresh_fused_projections(pipe) -> None:
    """Recompute `to_qkv` / `to_kv` (diffusers' fused projections) from to_q, to_k, to_v."""
    for module in pipe.unet.modules():
        if getattr(module, "fused_projections", False):
            if hasattr(module, "to_qkv"):
                parts = [module.to_q, module.to_k, module.to_v]
                module.to_qkv.weight.copy_(torch.cat([p.weight for p in parts]))
            elif hasattr(module, "to_kv"):
                module.to_kv.weight.copy_(torch.cat([module.to_k.weight, module.to_v.weight]))
