"""The models a generate worker keeps resident, loaded once per process from shared.ml, with the
names and short hashes (A1111's 10-hex-digit sha256 prefix) recorded in every PNG."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

from services.generator.detectors import Detector, load_detector


@dataclass
class ResidentModels:
    base: object  # StableDiffusionPipeline
    controlnet_openpose: object | None
    controlnet_tile: object | None
    upscaler: object | None  # spandrel ImageModelDescriptor
    detectors: dict[str, Detector | None]
    preset: str
    base_name: str
    hashes: dict[str, str] = field(default_factory=dict)  # role -> short hash

    def networks(self) -> dict[str, torch.nn.Module | None]:
        """Every resident network by name (the dtype guard watches these)."""
        base = self.base
        return {
            "unet": base.unet,
            "vae": base.vae,
            "text_encoder": base.text_encoder,
            "controlnet_openpose": self.controlnet_openpose,
            "controlnet_tile": self.controlnet_tile,
            "upscaler": getattr(self.upscaler, "model", None),
        }


def short_hash(path: Path) -> str:
    """sha256 of a file, or of a folder's weight files in name order, first 10 hex digits."""
    files = (
        [path]
        if path.is_file()
        else sorted(
            p for p in path.rglob("*") if p.suffix in (".safetensors", ".bin", ".pth", ".pt", ".ckpt")
        )
    )
    digest = hashlib.sha256()
    for file in files:
        with file.open("rb") as f:
            while block := f.read(1 << 22):
                digest.update(block)
    return digest.hexdigest()[:10]


def load_resident(preset: str | None = None, device: str | None = None) -> ResidentModels:
    from shared.ml import loading

    preset = loading.current_preset(preset)
    device = loading.resolve_device(device)
    roles = ("base", "controlnet_openpose", "controlnet_tile", "upscaler")
    hashes = {role: _role_hash(role, preset) for role in roles}
    return ResidentModels(
        base=loading.load_base_pipeline(preset, device),
        controlnet_openpose=loading.load_controlnet("openpose", preset, device),
        controlnet_tile=loading.load_controlnet("tile", preset, device),
        upscaler=loading.load_upscaler(preset, device),
        detectors={kind: load_detector(kind, device) for kind in ("face", "hand")},
        preset=preset,
        base_name=loading.base_model_id(preset),
        hashes=hashes,
    )


def _role_hash(role: str, preset: str) -> str:
    """Short hash of a role's weights; for real weights the registry's verified (pinned) sha256
    of the largest file, so a 2 GB checkpoint is not hashed again at every start."""
    from shared.ml import loading, registry

    path = loading.model_path(role, preset)
    if preset == "tiny":
        return short_hash(path)
    spec = registry.get_spec(registry.default_name(role))
    root = registry.model_dir()
    weights = max(spec.files, key=lambda f: (root / spec.name / f.path).stat().st_size)
    full = root / spec.name / weights.path
    return registry.verify_file(root, f"{spec.name}/{weights.path}", full, weights.sha256)[:10]
