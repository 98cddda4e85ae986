"""Selective scan: the reference and the fast implementations behind one dispatch point.

Layers call `selective_scan_2d_proj` (the scan with low-rank step sizes) and never know which implementation
runs; `selective_scan_2d` takes full-width raw step sizes instead. Two convolutions are dispatched the same way,
each with its PyTorch definition (`*_ref`, in `conv_ref.py`) beside it: `dwconv_silu` (SS2D's depthwise conv and SiLU) and
`conv3x3_reflect` (the CNN decoder's output layer: ReLU, reflection padding, 3x3 conv); so is the decoder's
`upsample_nearest2x`.
"""

from __future__ import annotations

import contextlib

import torch

from .conv_ref import conv3x3_reflect_ref, dwconv_silu_ref, upsample_nearest2x_ref
from .scan_ref import cross_merge, cross_scan, scan_orders, selective_scan_2d_ref, selective_scan_ref

__all__ = ["selective_scan_2d", "selective_scan_2d_proj", "selective_scan_2d_ref", "selective_scan_ref", "cross_scan",
           "cross_merge", "scan_orders", "dwconv_silu", "dwconv_silu_ref", "conv3x3_reflect", "conv3x3_reflect_ref",
           "upsample_nearest2x", "upsample_nearest2x_ref", "IMPLEMENTATIONS", "use_impl"]

IMPLEMENTATIONS = ("auto", "ref", "cpu", "triton")
_chosen = "auto"   # set by use_impl: a plain global, which torch.compile traces (and guards on) without a graph break


@contextlib.contextmanager
def use_impl(impl: str):
    """Within the block, every scan called with impl="auto" (as the layers call it) runs `impl` instead: one switch
    to compare a fast path with the reference in a whole model, or to debug a kernel. Nests; process-wide (every
    thread sees it); torch.compile guards on it, so compiled code follows it too."""
    global _chosen
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"impl must be one of {', '.join(IMPLEMENTATIONS)}; got {impl!r}")
    before, _chosen = _chosen, impl
    try:
        yield
    finally:
        _chosen = before


def _resolve(impl: str) -> str:
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"impl must be one of {', '.join(IMPLEMENTATIONS)}; got {impl!r}")
    return _chosen if impl == "auto" else impl


def _needs_grad(*ts) -> bool:
    """Whether autograd must see through an operation on these tensors (None entries are skipped)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in ts)


def selective_scan_2d(u, delta, A, B, C, D, delta_bias, H: int, W: int, impl: str = "auto"):
    """Four-direction selective scan (see `selective_scan_2d_ref` for shapes and meaning).

    impl: "auto" picks the fused Triton kernel on CUDA and the fused CPU kernel on the CPU (whose backward, when
    gradients are needed, goes through the reference), unless `use_impl` chose one; "ref", "cpu", "triton" force one.
    """
    impl = _resolve(impl)
    if impl == "auto":
        impl = "triton" if u.is_cuda else "cpu"
    if impl == "triton":
        from .triton_scan import selective_scan_2d_triton
        return selective_scan_2d_triton(u, delta, A, B, C, D, delta_bias, H, W)
    if impl == "cpu":
        from .scan_cpu import selective_scan_2d_cpu
        return selective_scan_2d_cpu(u, delta, A, B, C, D, delta_bias, H, W)
    return selective_scan_2d_ref(u, delta, A, B, C, D, delta_bias, H, W)


def selective_scan_2d_proj(u, dt_low, dt_weight, A, B, C, D, delta_bias, H: int, W: int, impl: str = "auto"):
    """`selective_scan_2d` with delta = dt_low @ dt_weight^T per order: the layers' low-rank step sizes.

    dt_low: [Bt, 4, L, R] (any strides), dt_weight: [4, Dm, R]; the other arguments as in `selective_scan_2d`.
    Where the Triton scan runs without gradients on 16-bit step sizes (bf16 or fp16 autocast), one Triton kernel
    computes softplus(delta + delta_bias) as the projection's epilogue and the scan takes those step sizes (the
    scan's exp2 unit, one of its limits, is spared the softplus); otherwise the projection is a batched matmul
    and the scan applies the softplus (for float32 the kernel's IEEE products are slow: 1.2 ms at 512² batch 16
    on an H200, timed on bf16 data sent through them, against 0.21 ms for the 16-bit products).
    """
    impl = _resolve(impl)
    use_triton = impl == "triton" or (impl == "auto" and u.is_cuda)
    if use_triton and dt_low.dtype != torch.float32 and not _needs_grad(u, dt_low, dt_weight, A, B, C, D, delta_bias):
        from .triton_delta import delta_softplus_triton
        from .triton_scan import selective_scan_2d_triton
        dt = delta_softplus_triton(dt_low, dt_weight, delta_bias)
        return selective_scan_2d_triton(u, dt, A, B, C, D, torch.zeros_like(delta_bias), H, W,
                                        delta_softplus=False)
    return selective_scan_2d(u, dt_low @ dt_weight.transpose(1, 2), A, B, C, D, delta_bias, H, W, impl)


def dwconv_silu(x, weight, bias):
    """SiLU(depthwise conv2d(x)) with zero padding k // 2, from [B, H, W, C] to [B, H*W, C] tokens: one Triton kernel
    for CUDA inference (`triton_conv.dwconv_silu_triton`), PyTorch's operators otherwise (autograd, CPU)."""
    if x.is_cuda and bias is not None and not _needs_grad(x, weight, bias):
        from . import triton_conv
        if triton_conv.dwconv_supported(x, weight):
            return triton_conv.dwconv_silu_triton(x, weight, bias)
    return dwconv_silu_ref(x, weight, bias)


def conv3x3_reflect(x, weight, bias, relu: bool = True, in_bias=None):
    """conv2d(reflection_pad_1(relu(x + in_bias)), weight, bias): for bf16/fp16 CUDA inference within the kernel's
    limits (`triton_conv.supported`) one operator, which runs the Triton kernel on channels-last x (as torch.compile
    hands it over) and PyTorch's operators on other layouts; PyTorch's operators otherwise (autograd, float32, CPU)."""
    if x.is_cuda and not _needs_grad(x, weight, bias, in_bias):
        from . import triton_conv
        if triton_conv.supported(x, weight):
            return triton_conv.conv3x3_reflect_op(x, weight, bias, relu, in_bias)
    return conv3x3_reflect_ref(x, weight, bias, relu, in_bias)


def upsample_nearest2x(x):
    """Nearest-neighbour upsampling by 2 of [B, C, H, W] (`upsample_nearest2x_ref`). Where autograd sees through it,
    an expand and a reshape, whose backward sums each 2x2 block: PyTorch's upsampling backward, as torch.compile
    lowers it, adds with atomics, and its three calls took a tenth of a batch-8 training step on an H100
    (docs/performance.md). The same values either way; without gradients, PyTorch's operator (it keeps the input's
    memory format)."""
    if not _needs_grad(x):
        return upsample_nearest2x_ref(x)
    B, C, H, W = x.shape
    return x[:, :, :, None, :, None].expand(B, C, H, 2, W, 2).reshape(B, C, 2 * H, 2 * W)
