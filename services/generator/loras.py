"""A job's LoRAs on the resident pipeline: loaded as named adapters with their weights, and
unloaded when the job ends, so the base weights are never changed between jobs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

LIKENESS_ADAPTER = "likeness"


@dataclass(frozen=True)
class LoraSpec:
    adapter: str  # adapter name, unique within the job
    path: Path  # a .safetensors file (diffusers/peft or kohya/A1111 keys)
    weight: float


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
            self.pipe.set_adapters([s.adapter for s in self.specs], [s.weight for s in self.specs])
        except BaseException:
            self.pipe.unload_lora_weights()
            raise
        return self

    def __exit__(self, *exc) -> None:
        if self.specs:
            self.pipe.unload_lora_weights()  # removes the LoRA layers: the base is as loaded
