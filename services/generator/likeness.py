"""A user's likeness as the generator sees it: the LoRA file, its trigger and class words, and
reference face embeddings of the user's photos (for the identity score).

On disk (what the trainer writes, or what `studio generate --likeness` is pointed at; the file
names are shared/contracts/likeness_files.py's):
- a directory with one LoRA `*.safetensors` (preferably DIFFUSERS_FILE, also under DIFFUSERS_DIR,
  as the trainer writes it), an optional META_FILE {"trigger_word", "class_word"}, an optional
  EMBEDDINGS_FILE (N x 128 float32) and/or photos (*.jpg, *.png, also under `photos/`) to embed; or
- a single `.safetensors` file. The trainer's metadata keys `studio_trigger_word` /
  `studio_class_word` (services/trainer/export.py) name the words when META_FILE does not.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from shared.contracts.likeness_files import DIFFUSERS_DIR, DIFFUSERS_FILE, EMBEDDINGS_FILE, META_FILE

DEFAULT_TRIGGER = "ohwx"
DEFAULT_CLASS = "person"
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


class LikenessError(ValueError):
    pass


@dataclass(frozen=True)
class Likeness:
    lora_path: Path | None
    trigger_word: str = DEFAULT_TRIGGER
    class_word: str = DEFAULT_CLASS
    weight: float = 1.0
    reference_embeddings: np.ndarray = field(default_factory=lambda: np.zeros((0, 128), np.float32))

    @property
    def words(self) -> str:
        """What replaces "{likeness}" in style prompts."""
        return f"{self.trigger_word} {self.class_word}" if self.lora_path else f"a {self.class_word}"


def embed_images(images: Iterable[Image.Image]) -> np.ndarray:
    """128-d embeddings of the largest face of each image (images without a face are skipped)."""
    from shared.faces import detect_faces, face_embedding

    out = []
    for image in images:
        faces = detect_faces(image)
        if faces:
            out.append(face_embedding(image, faces[0]))
    return np.asarray(out, np.float32).reshape(-1, 128)


def embed_photos(paths: list[Path]) -> np.ndarray:
    """`embed_images` of image files."""

    def images() -> Iterator[Image.Image]:
        for path in paths:
            with Image.open(path) as im:
                yield im.convert("RGB")

    return embed_images(images())


def _photos_in(folder: Path) -> list[Path]:
    return [p for p in sorted(folder.rglob("*")) if p.suffix.lower() in PHOTO_SUFFIXES]


def load_likeness(path: Path | str, photos: Path | None = None) -> Likeness:
    """`photos`: a folder of the user's photos for the reference embeddings (identity score);
    it takes the place of the embeddings or photos in a likeness folder."""
    path = Path(path)
    info: dict = {}
    if path.is_file():
        if path.suffix != ".safetensors":
            raise LikenessError(f"{path}: a likeness LoRA must be a .safetensors file")
        lora = path
    elif path.is_dir():
        loras = sorted(path.glob("*.safetensors"))
        for preferred in (path / DIFFUSERS_FILE, path / DIFFUSERS_DIR / DIFFUSERS_FILE):  # the trainer's
            if preferred.is_file():
                loras = [preferred]
                break
        if len(loras) != 1:
            raise LikenessError(f"{path}: expected one LoRA .safetensors file, found {len(loras)}")
        lora = loras[0]
        if (path / META_FILE).is_file():
            info = json.loads((path / META_FILE).read_text())
    else:
        raise LikenessError(f"{path} does not exist")
    meta = _safetensors_metadata(lora)
    if photos is not None:
        references = embed_photos(_photos_in(Path(photos)))
    elif path.is_dir() and (path / EMBEDDINGS_FILE).is_file():
        references = np.load(path / EMBEDDINGS_FILE).astype(np.float32).reshape(-1, 128)
    elif path.is_dir():
        references = embed_photos(_photos_in(path))
    else:
        references = np.zeros((0, 128), np.float32)
    return Likeness(
        lora,
        info.get("trigger_word") or _word(meta, "trigger_word", DEFAULT_TRIGGER),
        info.get("class_word") or _word(meta, "class_word", DEFAULT_CLASS),
        reference_embeddings=references,
    )


def _word(meta: dict[str, str], key: str, default: str) -> str:
    return meta.get(f"studio_{key}") or meta.get(key) or default


def _safetensors_metadata(path: Path) -> dict[str, str]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        raise LikenessError(f"{path}: not a readable safetensors file, it may be damaged ({exc})") from exc


def identity_score(embedding: np.ndarray, references: np.ndarray) -> float | None:
    """1 - mean Euclidean distance to the user's reference embeddings, clipped to 0..1 (dlib's
    same-person threshold 0.6 maps to 0.4); None without references."""
    if len(references) == 0:
        return None
    distance = float(np.linalg.norm(references - embedding[None, :], axis=1).mean())
    return float(np.clip(1.0 - distance, 0.0, 1.0))
