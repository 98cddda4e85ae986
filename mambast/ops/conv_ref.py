"""The PyTorch definitions of the layer operations that have fast versions: the two convolutions with fused GPU
kernels (`triton_conv.py`) and the decoder's upsampling. What the fast versions must compute, used wherever they
do not run (autograd, CPU, float32, other layouts)."""

from __future__ import annotations

import torch.nn.functional as F


def dwconv_silu_ref(x, weight, bias):
    """SiLU(depthwise conv2d(x, weight, bias, padding k // 2)): x [B, H, W, C], weight [C, 1, k, k], bias [C] or
    None; returns [B, H*W, C] (channels-last strides throughout: no copy of x)."""
    B, H, W, C = x.shape
    y = F.silu(F.conv2d(x.permute(0, 3, 1, 2), weight, bias, padding=weight.shape[-1] // 2, groups=C))
    return y.permute(0, 2, 3, 1).reshape(B, H * W, C)


def conv3x3_reflect_ref(x, weight, bias, relu: bool = True, in_bias=None):
    """conv2d(reflection_pad_1(relu(x + in_bias)), weight, bias): x [B, C, H, W], weight [Cout, C, 3, 3], bias
    [Cout] or None, in_bias [C] or None (the previous convolution's bias, when that one ran without it; rounded to
    x's dtype, as the kernel does)."""
    if in_bias is not None:
        x = x + in_bias.to(x.dtype).view(-1, 1, 1)
    return F.conv2d(F.pad(F.relu(x) if relu else x, (1, 1, 1, 1), mode="reflect"), weight, bias)


def upsample_nearest2x_ref(x):
    """Nearest-neighbour upsampling by 2: [B, C, H, W] -> [B, C, 2H, 2W]."""
    return F.interpolate(x, scale_factor=2, mode="nearest")
