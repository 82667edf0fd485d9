"""shared/ml/channels_last_norm.py: GroupNorm on channels_last tensors without NCHW copies.

Runs on the CPU (the arithmetic is the same on CUDA, where it is used): the result equals
`nn.GroupNorm`'s, keeps the channels_last layout, and every other input takes GroupNorm's path."""

from __future__ import annotations

import pytest
import torch
from diffusers import UNet2DConditionModel
from torch import nn

from shared.ml.channels_last_norm import ChannelsLastGroupNorm, use_channels_last_norms

CASES = [("cpu", torch.float32), ("cpu", torch.bfloat16)]
if torch.cuda.is_available():  # where the product uses it (a GPU machine runs this file too)
    CASES += [("cuda", torch.float16), ("cuda", torch.float32)]


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize(("device", "dtype"), CASES)
@torch.no_grad()  # with autograd on, nn.GroupNorm's own path runs
def test_equals_group_norm_and_stays_channels_last(affine: bool, device: str, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    reference = nn.GroupNorm(8, 32, eps=1e-6, affine=affine)
    if affine:
        nn.init.normal_(reference.weight)
        nn.init.normal_(reference.bias)
    ours = ChannelsLastGroupNorm(8, 32, eps=1e-6, affine=affine)
    ours.load_state_dict(reference.state_dict())
    ours, reference = ours.to(device, dtype), reference.to(device, dtype)
    tolerance = {torch.float32: 1e-4, torch.float16: 4e-3, torch.bfloat16: 3e-2}[dtype]
    # a spread like a UNet's activations, and an offset 10x the spread: neither E[x^2] - mean^2
    # nor x * scale + shift may lose what is left after the mean
    for spread, offset in ((40.0, 25.0), (4.0, 40.0)):
        x = torch.randn(3, 32, 9, 7) * spread + offset
        x = x.to(device, dtype).contiguous(memory_format=torch.channels_last)
        out, expected = ours(x), reference(x.contiguous())
        assert out.dtype == dtype
        assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()
        diff = (out.float() - expected.float()).abs().max().item()
        assert diff <= tolerance * max(1.0, expected.abs().max().item()), (spread, offset, diff)


def native_group_norm_runs(norm: nn.Module, x: torch.Tensor) -> bool:
    """Whether `norm(x)` ran PyTorch's group_norm operator (seen by the profiler, nothing patched)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        out = norm(x)
    assert out.shape == x.shape and out.abs().max() > 0  # a real result either way
    return any(event.key == "aten::group_norm" for event in prof.key_averages())


def test_only_channels_last_4d_input_takes_the_new_path() -> None:
    norm = ChannelsLastGroupNorm(4, 16)
    plain = [torch.randn(2, 16, 5, 5), torch.randn(2, 16, 30), torch.randn(2, 16, 1, 1)]
    nhwc = [torch.randn(n, 16, h, w).contiguous(memory_format=torch.channels_last) for n, h, w in
            ((2, 5, 5), (1, 3, 4), (1, 1, 6))]  # fmt: skip
    with torch.no_grad():
        assert all(native_group_norm_runs(norm, x) for x in plain)  # GroupNorm's own path
        assert not any(native_group_norm_runs(norm, x) for x in nhwc)  # the new path
    assert native_group_norm_runs(norm, nhwc[0])  # autograd on: GroupNorm's path (out= has none)


def test_installs_in_place_in_a_unet() -> None:
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=8, norm_num_groups=8,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=4,
    ).eval()  # fmt: skip
    sample, hidden = torch.randn(2, 4, 16, 16), torch.randn(2, 7, 32)
    with torch.inference_mode():
        expected = unet(sample, 10, encoder_hidden_states=hidden).sample
        state = {k: v.clone() for k, v in unet.state_dict().items()}
        norms = sum(type(m) is nn.GroupNorm for m in unet.modules())
        assert use_channels_last_norms(unet) == norms > 0
        assert not any(type(m) is nn.GroupNorm for m in unet.modules())
        assert unet.state_dict().keys() == state.keys()
        unet.to(memory_format=torch.channels_last)
        sample = sample.contiguous(memory_format=torch.channels_last)
        out = unet(sample, 10, encoder_hidden_states=hidden).sample
    assert (out - expected).abs().max().item() <= 1e-4 * max(1.0, expected.abs().max().item())
