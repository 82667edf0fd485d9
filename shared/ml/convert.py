"""Convert a pickled PyTorch state dict (`.bin`, `.pt`) into safetensors, loading it weights-only.

Some hub repositories publish only a pickle (lllyasviel/control_v11f1e_sd15_tile has
`diffusion_pytorch_model.bin` and no safetensors on its main branch). A pickle can run code when
unpickled; `torch.load(weights_only=True)` restricts it to tensors and plain containers and
raises `pickle.UnpicklingError` for anything else. The loaders then read only the safetensors.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

from shared.ml.registry import ModelError


class UnsafePickle(ModelError):
    """A pickle that holds more than tensors: refused, never unpickled with full rights."""


def pickle_to_safetensors(src: Path, dst: Path, *, metadata: dict[str, str] | None = None) -> int:
    """Write the state dict in `src` (a torch pickle) to `dst` as safetensors, atomically.

    The pickle is read with `torch.load(weights_only=True, mmap=True)` on the CPU; tensors keep
    their dtype and shape. Returns the number of tensors. Raises UnsafePickle when the pickle
    needs anything but tensors (weights-only refusal) or is not a flat name -> tensor mapping.
    """
    import torch
    from safetensors.torch import save_file

    try:
        try:  # mmap: the tensors stay in the page cache instead of a second copy in memory
            state = torch.load(src, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:  # a pre-1.6 (non-zip) torch pickle cannot be memory-mapped
            if "mmap" not in str(e):
                raise
            state = torch.load(src, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafePickle(f"{src} is not a weights-only pickle and was not loaded: {e}") from e
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UnsafePickle(f"{src} does not hold a flat state dict (name -> tensor)")
    # safetensors refuses tensors that share storage: copy the second and later users of one
    # (only those, so a 1.45 GB ControlNet is not held twice in memory); contiguous() as it needs.
    seen: set[int] = set()
    tensors = {}
    for k, v in state.items():
        ptr = v.untyped_storage().data_ptr()
        tensors[k] = (v.clone() if ptr in seen else v).contiguous()
        seen.add(ptr)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    try:
        save_file(tensors, str(tmp), metadata={"format": "pt", **(metadata or {})})
        tmp.replace(dst)
    finally:
        tmp.unlink(missing_ok=True)
    return len(tensors)


def converted_from(path: Path) -> str | None:
    """The sha256 of the pickle a safetensors file was converted from (its `source_sha256`
    metadata), or None; reads only the file's header."""
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return (f.metadata() or {}).get("source_sha256")
