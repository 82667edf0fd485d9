"""A job's LoRAs on the resident pipeline: loaded as named adapters with their weights, and
unloaded when the job ends, so the base weights are never changed between jobs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

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

    def adapter_weight(self) -> float | dict[str, float]:
        """The weight for diffusers' `set_adapters`: one number, or one per component."""
        if self.te_weight is None or self.te_weight == self.weight:
            return self.weight
        return {"unet": self.weight, "text_encoder": self.te_weight}


class ActiveLoras:
    """Context manager: `with ActiveLoras(pipe, specs): ...` runs with exactly these LoRAs."""

    def __init__(self, pipe, specs: list[LoraSpec]):
        names = [s.adapter for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate LoRA adapter names: {names}")
        self.pipe = pipe
        self.specs = specs

    def __enter__(self) -> ActiveLoras:
        if not self.specs:
            return self
        try:
            for spec in self.specs:
                if not spec.path.is_file():
                    raise FileNotFoundError(f"LoRA file {spec.path} does not exist")
                self.pipe.load_lora_weights(
                    str(spec.path.parent), weight_name=spec.path.name, adapter_name=spec.adapter
                )
            self.pipe.set_adapters([s.adapter for s in self.specs], [s.adapter_weight() for s in self.specs])
        except BaseException:
            self.pipe.unload_lora_weights()
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self.specs:
            self.pipe.unload_lora_weights()  # removes the LoRA layers: the base is as loaded


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
    place and their layers removed, so module structure and parameter storage never change (no
    recompilation, CUDA graphs stay valid); the touched weights are restored bit for bit from a
    snapshot on every way out: a normal exit, and any error (CUDA OOM, a Celery soft time limit)
    raised while loading, fusing, unloading or refreshing the fused QKV projections, which
    diffusers' fuse/unfuse cannot promise. When the restore itself fails, WeightsNotRestored is
    raised and every later BakedLoras in this process refuses to start."""

    def __init__(self, pipe, specs: list[LoraSpec]):
        ActiveLoras(pipe, specs)  # same validation
        self.pipe = pipe
        self.specs = specs
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

        with ActiveLoras(self.pipe, self.specs):  # loads; unloads on any error below
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
            with torch.no_grad():
                for weight, original in self._saved:
                    weight.copy_(original)
            _refresh_fused_projections(self.pipe)
        except BaseException as exc:
            _weights_damaged = f"{type(exc).__name__}: {exc}"[:300]
            raise WeightsNotRestored(f"resident weights were not restored: {_weights_damaged}") from exc
        self._saved.clear()


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
