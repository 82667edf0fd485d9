"""diffusers state dicts -> one A1111/LDM single-file SD-1.x checkpoint (what civitai ships).

The inverse of diffusers' own single-file loader (`diffusers.loaders.single_file_utils`:
`convert_ldm_unet_checkpoint`, `convert_ldm_vae_checkpoint`, `convert_ldm_clip_checkpoint`), so
random bench weights load through the product's real `from_single_file` path. Key layout of the
original CompVis `ldm` code: UNet under `model.diffusion_model.`, VAE under `first_stage_model.`,
CLIP text model under `cond_stage_model.transformer.`. tests/test_sd15_random.py checks the round
trip (write here, load with diffusers, identical tensors).
"""

from __future__ import annotations

import re

import torch

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
TEXT_PREFIX = "cond_stage_model.transformer."

# diffusers ResNet names -> ldm ResBlock names (UNet) and ResnetBlock names (VAE).
_UNET_RESNET = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"),
                ("conv2", "out_layers.3"), ("time_emb_proj", "emb_layers.1"),
                ("conv_shortcut", "skip_connection")]  # fmt: skip
_VAE_ATTN = [("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out")]


def _rename(rest: str, pairs: list[tuple[str, str]]) -> str:
    head, _, leaf = rest.rpartition(".")  # "norm1.weight" -> ("norm1", "weight")
    for new, old in pairs:
        if head == new:
            return f"{old}.{leaf}"
    return rest


def unet_to_ldm(state: dict[str, torch.Tensor], layers_per_block: int) -> dict[str, torch.Tensor]:
    """diffusers UNet2DConditionModel keys -> ldm UNetModel keys (SD-1.x: 4 down/up blocks)."""
    from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING

    top = DIFFUSERS_TO_LDM_MAPPING["unet"]["layers"]
    per = layers_per_block + 1  # ldm counts each block's downsampler (input) / extra layer (output)
    up_has_attention = {
        int(k.split(".")[1]) for k in state if k.startswith("up_blocks.") and ".attentions." in k
    }
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key in top:
            new = top[key]
        elif m := re.match(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
            b, kind, i, rest = int(m[1]), m[2], int(m[3]), m[4]
            slot = "0." + _rename(rest, _UNET_RESNET) if kind == "resnets" else "1." + rest
            new = f"input_blocks.{1 + b * per + i}.{slot}"
        elif m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
            new = f"input_blocks.{(int(m[1]) + 1) * per}.0.op.{m[2]}"
        elif m := re.match(r"mid_block\.resnets\.(\d+)\.(.+)", key):
            new = f"middle_block.{2 * int(m[1])}.{_rename(m[2], _UNET_RESNET)}"
        elif m := re.match(r"mid_block\.attentions\.0\.(.+)", key):
            new = f"middle_block.1.{m[1]}"
        elif m := re.match(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
            b, kind, i, rest = int(m[1]), m[2], int(m[3]), m[4]
            slot = "0." + _rename(rest, _UNET_RESNET) if kind == "resnets" else "1." + rest
            new = f"output_blocks.{b * per + i}.{slot}"
        elif m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
            b = int(m[1])
            new = (
                f"output_blocks.{b * per + layers_per_block}.{2 if b in up_has_attention else 1}.conv.{m[2]}"
            )
        else:
            raise KeyError(f"no ldm name for UNet key {key!r}")
        out[UNET_PREFIX + new] = value
    return out


def vae_to_ldm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusers AutoencoderKL keys -> ldm AutoencoderKL keys; attention projections become the
    1x1 convolutions ldm stores."""
    from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING

    top = DIFFUSERS_TO_LDM_MAPPING["vae"]
    n_up = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("decoder.up_blocks."))
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        resnet = [("conv_shortcut", "nin_shortcut")]
        if key in top:
            new = top[key]
        elif m := re.match(r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            new = f"encoder.down.{m[1]}.block.{m[2]}.{_rename(m[3], resnet)}"
        elif m := re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
            new = f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.(.+)", key):
            new = f"decoder.up.{n_up - 1 - int(m[1])}.block.{m[2]}.{_rename(m[3], resnet)}"
        elif m := re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
            new = f"decoder.up.{n_up - 1 - int(m[1])}.upsample.conv.{m[2]}"
        elif m := re.match(r"(encoder|decoder)\.mid_block\.resnets\.(\d+)\.(.+)", key):
            new = f"{m[1]}.mid.block_{int(m[2]) + 1}.{_rename(m[3], resnet)}"
        elif m := re.match(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)", key):
            new = f"{m[1]}.mid.attn_1.{_rename(m[2], _VAE_ATTN)}"
            if value.ndim == 2:
                value = value[:, :, None, None]
        else:
            raise KeyError(f"no ldm name for VAE key {key!r}")
        out[VAE_PREFIX + new] = value
    return out


def text_to_ldm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers CLIPTextModel keys -> ldm FrozenCLIPEmbedder keys: `text_model.` names, prefixed
    (transformers 5 drops the `text_model.` level from its own state dict)."""
    return {
        TEXT_PREFIX + "text_model." + key.removeprefix("text_model."): value for key, value in state.items()
    }


def single_file_state(unet, vae, text_encoder, dtype: torch.dtype = torch.float16) -> dict[str, torch.Tensor]:
    """One A1111-layout state dict of the three models, in `dtype`, contiguous, on the CPU."""
    state = {
        **unet_to_ldm(unet.state_dict(), unet.config.layers_per_block),
        **vae_to_ldm(vae.state_dict()),
        **text_to_ldm(text_encoder.state_dict()),
    }
    return {k: v.detach().to("cpu", dtype).contiguous() for k, v in state.items()}
