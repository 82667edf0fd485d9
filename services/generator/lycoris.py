"""Weight deltas of kohya/LyCORIS network modules, as A1111 and ComfyUI compute them.

A module is one `lora_unet_<path>` / `lora_te_text_model_<path>` prefix of a file with its tensors
(suffixes below). Its delta is added to the base weight: `W += strength * scale * delta`, where
`scale = alpha / rank` with the module's `.alpha` tensor (1 without one). The rules follow
ComfyUI's comfy/weight_adapter/{lora,loha,lokr}.py and comfy/lora.py ("diff" patches), which
match A1111's extensions-builtin/Lora/network_{lora,hada,lokr,full}.py:

- LoRA / LoCon: `lora_up` (out, r[, 1, 1]) @ `lora_down` (r, in[, kh, kw]); with `lora_mid`
  (r, r, kh, kw), the Tucker form `up . mid . down` (down, up 1x1). rank = lora_down's dim 0.
- LoHa: `(hada_w1_a @ hada_w1_b) * (hada_w2_a @ hada_w2_b)` (Hadamard product); with
  `hada_t1`/`hada_t2`, each factor is the Tucker product `t . w_b . w_a` (w_a is then (r, out)).
  rank = hada_w1_b's dim 0.
- LoKr: `kron(w1, w2)`, each either given (`lokr_w1`, `lokr_w2`) or a product of its `_a`/`_b`
  halves (`lokr_t2`: Tucker form of w2); w1 gets 1x1 kernel dims when w2 is a conv kernel.
  rank = lokr_w2_b's dim 0 when w2 is a product, else lokr_w1_b's, else none (scale 1).
- Full (LyCORIS `full`): `diff` (the delta itself) and `diff_b` (a bias delta), scale 1.

Shapes are checked by the caller (services/generator/lora_files.py) from the file's header,
before any tensor is read.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

# Suffixes of each module kind, as they follow the module prefix and a ".".
KIND_SUFFIXES: dict[str, tuple[str, ...]] = {
    "lora": ("lora_up.weight", "lora_down.weight", "lora_mid.weight"),
    "loha": ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "hada_t1", "hada_t2"),
    "lokr": ("lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a", "lokr_w2_b", "lokr_t2"),
    "full": ("diff", "diff_b"),
}
SHARED_SUFFIXES = ("alpha", "scale")  # `scale` is written by some LyCORIS versions; unused here
# Module kinds that LyCORIS and others write and that no product path applies (named in errors).
UNSUPPORTED_SUFFIXES: dict[str, str] = {
    "dora_scale": "DoRA (weight-decomposed LoRA)",
    "oft_blocks": "OFT",
    "oft_diag": "OFT",
    "oft_R": "BOFT",
    "a1.weight": "GLoRA",
    "b1.weight": "GLoRA",
    "weight": "(IA)^3",
    "w_norm": "a normalisation-layer patch",
    "b_norm": "a normalisation-layer patch",
}


def module_kind(suffixes: set[str]) -> str | None:
    """The kind of one module from the suffixes of its keys: lora/loha/lokr/full, or None."""
    for kind in ("loha", "lokr", "full", "lora"):  # a mixed module is taken as ComfyUI's last match
        if suffixes & set(KIND_SUFFIXES[kind]):
            return kind
    return None


def _tucker(t: torch.Tensor, w_b: torch.Tensor, w_a: torch.Tensor) -> torch.Tensor:
    """Tucker product: t (r1, r2, kh, kw), w_b (r2, in), w_a (r1, out) -> (out, in, kh, kw)."""
    return torch.einsum("a b h w, b i, a o -> o i h w", t, w_b, w_a)


def delta_shape(kind: str, shapes: Mapping[str, tuple[int, ...]]) -> tuple[int, ...]:
    """Shape of the reconstructed delta from the tensors' shapes (no tensor is read): its numel
    must equal the weight's, and its dim 0 the weight's out features, for the delta to apply."""
    if kind == "lora":
        up, down = shapes["lora_up.weight"], shapes["lora_down.weight"]
        kernel = shapes["lora_mid.weight"][2:] if "lora_mid.weight" in shapes else down[2:]
        return (up[0], down[1], *kernel)
    if kind == "loha":
        if "hada_t1" in shapes:
            return (shapes["hada_w1_a"][1], shapes["hada_w1_b"][1], *shapes["hada_t1"][2:])
        return (shapes["hada_w1_a"][0], shapes["hada_w1_b"][1])
    if kind == "lokr":
        w1 = shapes.get("lokr_w1") or (shapes["lokr_w1_a"][0], shapes["lokr_w1_b"][1])
        if "lokr_w2" in shapes:
            w2 = shapes["lokr_w2"]
        elif "lokr_t2" in shapes:
            w2 = (shapes["lokr_w2_a"][1], shapes["lokr_w2_b"][1], *shapes["lokr_t2"][2:])
        else:
            w2 = (shapes["lokr_w2_a"][0], shapes["lokr_w2_b"][1])
        w1 = (*w1, *([1] * (len(w2) - len(w1))))
        return tuple(a * b for a, b in zip(w1, w2, strict=False)) + tuple(w2[len(w1) :])
    if kind == "full":
        return tuple(shapes["diff"])
    raise ValueError(f"unknown module kind {kind!r}")


@torch.no_grad()
def module_delta(
    kind: str, tensors: Mapping[str, torch.Tensor], weight_shape: torch.Size
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weight delta reshaped to `weight_shape`, bias delta or None), float32, scale applied
    (alpha / rank; the caller multiplies by the user's strength). `tensors` maps suffixes
    (`lora_up.weight`, `hada_w1_a`, `alpha`, ...) to tensors of one module.
    Raises ValueError when the factors do not multiply to the weight's size."""
    t = {k: v.float() for k, v in tensors.items() if k != "alpha"}
    alpha = float(tensors["alpha"]) if "alpha" in tensors else None
    bias = None
    if kind == "lora":
        up, down = t["lora_up.weight"], t["lora_down.weight"]
        rank = down.shape[0]
        if "lora_mid.weight" in t:  # LoCon's Tucker form: up (out, r, 1, 1), down (r, in, 1, 1)
            delta = _tucker(t["lora_mid.weight"], down.flatten(1), up.flatten(1).T)
        else:
            delta = up.flatten(1) @ down.flatten(1)
    elif kind == "loha":
        rank = t["hada_w1_b"].shape[0]
        if "hada_t1" in t:
            delta = _tucker(t["hada_t1"], t["hada_w1_b"], t["hada_w1_a"]) * _tucker(
                t["hada_t2"], t["hada_w2_b"], t["hada_w2_a"]
            )
        else:
            delta = (t["hada_w1_a"] @ t["hada_w1_b"]) * (t["hada_w2_a"] @ t["hada_w2_b"])
    elif kind == "lokr":
        rank = None
        w1 = t.get("lokr_w1")
        if w1 is None:
            w1, rank = t["lokr_w1_a"] @ t["lokr_w1_b"], t["lokr_w1_b"].shape[0]
        w2 = t.get("lokr_w2")
        if w2 is None:
            rank = t["lokr_w2_b"].shape[0]  # w2's rank wins, as in ComfyUI and A1111
            if "lokr_t2" in t:
                w2 = _tucker(t["lokr_t2"], t["lokr_w2_b"], t["lokr_w2_a"])
            else:
                w2 = t["lokr_w2_a"] @ t["lokr_w2_b"]
        if w2.dim() == 4:
            w1 = w1[:, :, None, None]
        delta = torch.kron(w1.contiguous(), w2.contiguous())
    elif kind == "full":
        rank, alpha = None, None
        delta = t["diff"]
        bias = t.get("diff_b")
    else:
        raise ValueError(f"unknown module kind {kind!r}")
    if delta.numel() != weight_shape.numel():
        raise ValueError(
            f"a {kind} delta of shape {tuple(delta.shape)} does not fit a weight {tuple(weight_shape)}"
        )
    scale = alpha / rank if alpha is not None and rank else 1.0
    return delta.reshape(weight_shape) * scale, bias
