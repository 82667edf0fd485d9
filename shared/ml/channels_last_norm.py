"""GroupNorm that keeps a channels_last tensor channels_last (CUDA eager and CUDA graphs).

PyTorch's CUDA `group_norm` makes its input NCHW-contiguous first (aten/src/ATen/native/
group_norm.cpp: `input.contiguous()` off the CPU) and returns NCHW; the next convolution, whose
weights are channels_last, converts it back. In an SD-1.5 UNet that is two full-tensor copies
around each of its ~60 norms: `direct_copy_kernel_cuda` took 30% of the GPU time of a set of
portraits on an H100 (bench/results/generate_h100_cuda_graphs.json). Here the statistics are
reduced from the NHWC memory as it lies (a (N, H*W, G, C/G) view, no copy), accumulated in
float32, and one fused multiply-add writes the output channels_last. Whether that beats NCHW
networks (no norm copies, but cuDNN's own NCHW<->NHWC conversions around half convolutions) is
measured by bench/generate_bench.py's layout phases.
"""

from __future__ import annotations

import torch
from torch import nn


class ChannelsLastGroupNorm(nn.GroupNorm):
    """`nn.GroupNorm` whose forward reads and writes channels_last 4-d tensors without copying
    them to NCHW. Other inputs (NCHW, 3-d, ...) take `nn.GroupNorm`'s own path.

    Same result as `nn.GroupNorm` up to rounding: mean and variance are float32 reductions
    (var = E[x^2] - mean^2, clamped at 0) instead of Welford's, which loses precision where a
    group's |mean| is far above its spread (relative error ~1e-3 of the output at 10x in float32
    tests). Inference only: with autograd on, `nn.GroupNorm`'s own path runs.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        nhwc = input.dim() == 4 and input.is_contiguous(memory_format=torch.channels_last)
        if not nhwc or input.is_contiguous() or torch.is_grad_enabled():  # inference only (out=)
            return super().forward(input)
        n, c, h, w = input.shape
        g = self.num_groups
        grouped = input.permute(0, 2, 3, 1).view(n, h * w, g, c // g)  # the NHWC memory, as it lies
        count = h * w * (c // g)
        mean = grouped.sum(dim=(1, 3), dtype=torch.float32) / count  # (n, g)
        # float32 sums of the half values (no float copy of the tensor, no fp16 square to overflow)
        square = torch.linalg.vector_norm(grouped, 2, dim=(1, 3), dtype=torch.float32).square() / count
        inv_std = torch.rsqrt((square - mean.square()).clamp_(min=0.0) + self.eps)
        scale = inv_std.repeat_interleave(c // g, dim=1)  # (n, c)
        shift = -mean.repeat_interleave(c // g, dim=1) * scale
        if self.affine:
            shift = shift * self.weight.float() + self.bias.float()
            scale = scale * self.weight.float()
        # float32 scale and shift, read by one kernel that writes the input's dtype and strides:
        # rounded to half first, x * scale + shift would cancel badly where |mean| >> std
        out = torch.empty_like(input)
        return torch.addcmul(shift.view(n, c, 1, 1), input, scale.view(n, c, 1, 1), out=out)


def use_channels_last_norms(module: nn.Module, enable: bool = True) -> int:
    """Make every plain `nn.GroupNorm` inside `module` a `ChannelsLastGroupNorm` in place (same
    parameters, same state dict), or with `enable=False` turn them back; returns how many changed.
    Meant for CUDA networks in channels_last memory format: on the CPU, PyTorch's own group_norm
    already keeps channels_last."""
    old, new = (nn.GroupNorm, ChannelsLastGroupNorm) if enable else (ChannelsLastGroupNorm, nn.GroupNorm)
    changed = 0
    for sub in module.modules():
        if type(sub) is old:
            sub.__class__ = new
            changed += 1
    return changed
