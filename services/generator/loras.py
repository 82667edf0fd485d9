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


class BakedLoras:
    """Context manager for compiled pipelines: the job's LoRAs are fused into the weights in
    place and their layers removed, so module structure and parameter storage never change (no
    recompilation, CUDA graphs stay valid); on exit the touched weights are restored bit for bit
    from a snapshot. Fused QKV projections (`fuse_qkv_projections`) are refreshed both times."""

    def __init__(self, pipe, specs: list[LoraSpec]):
        ActiveLoras(pipe, specs)  # same validation
        self.pipe = pipe
        self.specs = specs
        self._saved: list[tuple[torch.nn.Parameter, torch.Tensor]] = []

    def __enter__(self) -> BakedLoras:
        if not self.specs:
            return self
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
        return self

    def __exit__(self, *exc) -> None:
        with torch.no_grad():
            for weight, original in self._saved:
                weight.copy_(original)
        self._saved.clear()
        if self.specs:
            _refresh_fused_projections(self.pipe)


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
