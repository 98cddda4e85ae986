"""Two convolutions of the model as single Triton kernels, for GPU inference.

`dwconv_silu_triton`: SS2D's depthwise convolution (k x k, zero padding, bias) and the SiLU after it, reading the
in_proj output in its [B, H, W, C] layout and writing the [B, H*W, C] tokens the scan takes, each output computed
once from its k x k neighbourhood in float32 and rounded once. A program walks DW_ROWS output rows one after the
other, so the rows each one reads were mostly loaded into L1 by the one before. Under torch.compile at 512² batch
16 on an H200 (`benchmarks/profile_gpu.py`): 0.158 ms per call against 0.19 ms for cuDNN's depthwise kernel and
the SiLU pass after it, twelve calls per forward. Of the 1.17 ms per batch that this and the output-layer kernel
took off the compiled model, this kernel itself accounts for ~0.40 ms; the rest came from inductor fusing the
kernels around it differently. `mambast.ops.dwconv_silu_ref` is the PyTorch definition.

`conv3x3_reflect_triton`: the CNN decoder's output layer: ReLU, reflection padding by 1, 3x3 convolution to a few
channels (64 -> 3 in the model), for 16-bit inference. A program walks CONV_ROWS rows of BLOCK_P output pixels;
for each of the 9 taps it loads the [BLOCK_P, C] input tile at the reflected row and columns (ReLU on load) and
multiplies it with that tap's [C, Cout] filter slice (padded to 16 outputs) on the tensor cores, accumulating in
float32. It is written for channels-last input (each pixel's channels one contiguous load). Alone
(docs/performance.md), on channels-last input: 0.73 ms against 1.12 ms for the compiled ReLU, padding and
cuDNN convolution; given its input in the traced graph's strides in the compiled model, 2.1 ms. So the operator
the model calls, `conv3x3_reflect_op`, takes a flexible layout and PyTorch's operators for inputs that are not
channels-last. In the compiled model it then saves little: the kernel takes what cuDNN's convolution took there
(0.72 ms), and where the ReLU and padding pass was (0.29 ms), a pointwise pass over the kernel's input remains
(0.25 ms; by its name, the previous convolution's bias). `mambast.ops.conv3x3_reflect_ref` is the PyTorch
definition.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

from .triton_scan import COMPILED, FAST_MATH, LOG2E_C as LOG2E

_FLOATS = (torch.float32, torch.bfloat16, torch.float16)

BLOCK_P = 128          # output pixels (along a row) per program
CONV_ROWS = 8          # output rows per program (one after the other)
MAX_CHANNELS = 128     # input channels the kernel takes (the model's output layer has 64)
MAX_OUTPUTS = 16       # output channels the kernel takes (the model's has 3)
DW_BLOCK_W = 32        # depthwise conv: output columns per program
DW_BLOCK_C = 128       # depthwise conv: channels per program
DW_ROWS = 8            # depthwise conv: output rows per program (one after the other)
DW_WARPS = 4


@triton.jit
def _silu(x):
    # x sigmoid(x) = x / (1 + 2^(-x log2 e)); compiled, the hardware's approximate division (no IEEE slow path;
    # x -> -inf gives -0 as the exact one does)
    d = 1.0 + tl.exp2(x * -LOG2E)
    return libdevice.fast_dividef(x, d) if FAST_MATH else x / d


@triton.jit
def _dwconv_silu_kernel(x_ptr, w_ptr, b_ptr, y_ptr, H, W, C,
                        sx_b, sx_h, sx_w, sx_c, sw_c, sw_i, sw_j,
                        KS: tl.constexpr, BLOCK_W: tl.constexpr, BLOCK_C: tl.constexpr, ROWS: tl.constexpr):
    # program: ROWS consecutive output rows of image b, each BLOCK_W columns x BLOCK_C channels, computed one after
    # the other, so the k input rows each needs were mostly loaded (into L1) by the rows before it
    n_cb = tl.cdiv(C, BLOCK_C)
    j = (tl.program_id(0) // n_cb) * BLOCK_W + tl.arange(0, BLOCK_W)
    c = (tl.program_id(0) % n_cb) * BLOCK_C + tl.arange(0, BLOCK_C)
    b = tl.program_id(2).to(tl.int64)
    c_ok = c < C
    x_base = x_ptr + b * sx_b + c[None, :] * sx_c
    bias = tl.load(b_ptr + c, mask=c_ok, other=0.0).to(tl.float32)
    i = tl.program_id(1) * ROWS
    i_end = tl.minimum(i + ROWS, H)
    while i < i_end:
        acc = tl.zeros([BLOCK_W, BLOCK_C], dtype=tl.float32) + bias[None, :]
        for di in tl.static_range(KS):
            r = i + di - KS // 2
            for dj in tl.static_range(KS):
                col = j + dj - KS // 2
                m = ((col >= 0) & (col < W) & (r >= 0) & (r < H))[:, None] & c_ok[None, :]   # zero padding
                xt = tl.load(x_base + r * sx_h + col[:, None] * sx_w, mask=m, other=0.0).to(tl.float32)
                wt = tl.load(w_ptr + c * sw_c + di * sw_i + dj * sw_j, mask=c_ok, other=0.0).to(tl.float32)
                acc += xt * wt[None, :]
        y = _silu(acc)
        out = y_ptr + ((b * H + i) * W + j[:, None]) * C + c[None, :]
        tl.store(out, y.to(y_ptr.dtype.element_ty), mask=(j < W)[:, None] & c_ok[None, :])
        i += 1


def _image_offsets_fit(x: torch.Tensor) -> bool:
    """Whether every offset within one image of x (all dimensions but the first) fits the kernels' int32 arithmetic
    (the image's start is computed in int64)."""
    return sum((n - 1) * abs(st) for n, st in zip(x.shape[1:], x.stride()[1:])) < 2 ** 31


def dwconv_supported(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether `dwconv_silu_triton` takes these arguments (x [B, H, W, C], weight [C, 1, k, k], k odd; one image's
    offsets in x and in the [H*W, C] result below 2^31)."""
    return (x.dim() == 4 and weight.dim() == 4 and weight.shape[:2] == (x.shape[3], 1)
            and weight.shape[2] == weight.shape[3] and weight.shape[2] % 2 == 1 and x.dtype in _FLOATS
            and x.shape[1] * x.shape[2] * x.shape[3] < 2 ** 31 and _image_offsets_fit(x))


@torch.library.custom_op("mambast::dwconv_silu", mutates_args=())
def dwconv_silu_triton(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """`mambast.ops.dwconv_silu_ref` in one launch, without autograd: x [B, H, W, C] (any strides), weight
    [C, 1, k, k] (k odd), bias [C]. Returns [B, H*W, C] in x's dtype (float32 sums, one rounding). An opaque
    operator for torch.compile."""
    if not dwconv_supported(x, weight) or tuple(bias.shape) != (x.shape[3],):
        raise ValueError(f"dwconv_silu_triton takes float [B, H, W, C] inputs (one image's offsets below 2^31), "
                         f"[C, 1, k, k] filters (k odd) and a [C] bias; got {x.dtype} {tuple(x.shape)}, "
                         f"{tuple(weight.shape)} and {tuple(bias.shape)}")
    bias = bias.contiguous()
    B, H, W, C = x.shape
    y = torch.empty(B, H * W, C, device=x.device, dtype=x.dtype)
    grid = (triton.cdiv(W, DW_BLOCK_W) * triton.cdiv(C, DW_BLOCK_C), triton.cdiv(H, DW_ROWS), B)
    _dwconv_silu_kernel[grid](x, weight, bias, y, H, W, C, *x.stride(), weight.stride(0), *weight.stride()[2:],
                              KS=weight.shape[2], BLOCK_W=DW_BLOCK_W, BLOCK_C=DW_BLOCK_C, ROWS=DW_ROWS,
                              num_warps=DW_WARPS)
    return y


@dwconv_silu_triton.register_fake
def _(x, weight, bias):
    return x.new_empty(x.shape[0], x.shape[1] * x.shape[2], x.shape[3])


@triton.jit
def _reflect(k, n):
    # index k in [-1, n] reflected into [0, n - 1] (as reflection padding by 1 reads it); clamped beyond
    k = tl.where(k < 0, -k, tl.where(k >= n, 2 * n - 2 - k, k))
    return tl.minimum(tl.maximum(k, 0), n - 1)


@triton.jit
def _conv_kernel(x_ptr, w_ptr, b_ptr, ib_ptr, y_ptr, C, H, W, Cout,
                 sx_b, sx_c, sx_h, sx_w, sy_b, sy_c, sy_h, sy_w,
                 BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_O: tl.constexpr, ROWS: tl.constexpr,
                 RELU: tl.constexpr, IN_BIAS: tl.constexpr, NATIVE: tl.constexpr):
    # program: ROWS consecutive output rows of BLOCK_P pixels, one after the other (the 3 input rows each needs were
    # mostly loaded into L1 by the rows before it)
    b = tl.program_id(2).to(tl.int64)
    j = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)  # output columns
    c = tl.arange(0, BLOCK_C)
    o = tl.arange(0, BLOCK_O)
    c_ok = (c < C)[None, :]
    x_base = x_ptr + b * sx_b + c[None, :] * sx_c
    bias = tl.load(b_ptr + o)
    if IN_BIAS:   # the previous convolution's bias (in x's dtype), added to x before the ReLU
        in_bias = tl.load(ib_ptr + c, mask=c < C, other=0.0)[None, :]
    i = tl.program_id(1) * ROWS
    i_end = tl.minimum(i + ROWS, H)
    while i < i_end:
        acc = tl.zeros([BLOCK_P, BLOCK_O], dtype=tl.float32) + bias[None, :]
        for di in tl.static_range(3):
            row = _reflect(i + di - 1, H)
            for dj in tl.static_range(3):
                col = _reflect(j + dj - 1, W)
                xt = tl.load(x_base + row * sx_h + col[:, None] * sx_w, mask=c_ok, other=0.0)     # [P, C]
                if IN_BIAS:   # the exact sum rounded once to x's dtype
                    if NATIVE:   # one packed 16-bit add
                        xt = xt + in_bias
                    else:        # the CPU interpreter (its 16-bit sums are wrong in Triton 3.6)
                        xt = (xt.to(tl.float32) + in_bias.to(tl.float32)).to(x_ptr.dtype.element_ty)
                if RELU:
                    xt = tl.where(xt > 0, xt, tl.zeros_like(xt))   # packed 16-bit max (tl.maximum: via float32)
                wt = tl.load(w_ptr + ((di * 3 + dj) * BLOCK_C + c[:, None]) * BLOCK_O + o[None, :])  # [C, O]
                tl.static_assert(xt.dtype == wt.dtype)
                if NATIVE:   # 16-bit products on the tensor cores, float32 sums
                    acc = tl.dot(xt, wt, acc)
                else:        # the CPU interpreter: exact float32 products
                    acc = tl.dot(xt.to(tl.float32), wt.to(tl.float32), acc, input_precision="ieee")
        y = y_ptr + b * sy_b + i * sy_h + j[:, None] * sy_w + o[None, :] * sy_c
        tl.store(y, acc.to(y_ptr.dtype.element_ty), mask=(j < W)[:, None] & (o < Cout)[None, :])
        i += 1


def supported(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether `conv3x3_reflect_triton` takes these arguments (one image's offsets in x and in the result below
    2^31)."""
    Cout, C, kh, kw = weight.shape
    return (x.dim() == 4 and x.shape[1] == C and (kh, kw) == (3, 3) and x.shape[2] >= 2 and x.shape[3] >= 2
            and C <= MAX_CHANNELS and Cout <= MAX_OUTPUTS and x.dtype in (torch.bfloat16, torch.float16)
            and _image_offsets_fit(x) and Cout * x.shape[2] * x.shape[3] < 2 ** 31)


def conv3x3_reflect_triton(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                           relu: bool = True, in_bias: torch.Tensor | None = None) -> torch.Tensor:
    """`mambast.ops.conv3x3_reflect_ref` in one launch, without autograd: x [B, C, H, W] in bf16 or fp16 (any
    strides, written for channels-last ones; H, W >= 2, C <= 128), weight [Cout <= 16, C, 3, 3] and bias
    [Cout] (cast to x's dtype and float32), in_bias [C] or None (cast to x's dtype and added to x, rounded once,
    before the ReLU). Returns [B, Cout, H, W] in x's dtype (float32 sums)."""
    if not supported(x, weight):
        raise ValueError(f"conv3x3_reflect_triton takes bf16/fp16 [B, C <= {MAX_CHANNELS}, H >= 2, W >= 2] inputs "
                         f"(one image's offsets below 2^31) and [Cout <= {MAX_OUTPUTS}, C, 3, 3] filters; got "
                         f"{x.dtype} {tuple(x.shape)} and {tuple(weight.shape)}")
    B, C, H, W = x.shape
    if in_bias is not None and (tuple(in_bias.shape) != (C,) or in_bias.device != x.device):
        raise ValueError(f"in_bias must be [{C}] on {x.device}; got {tuple(in_bias.shape)} on {in_bias.device}")
    Cout = weight.shape[0]
    block_c, block_o = max(16, triton.next_power_of_2(C)), 16
    w = x.new_zeros(3, 3, block_c, block_o)                     # [tap row, tap column, C, Cout], zero padded
    w[:, :, :C, :Cout] = weight.detach().permute(2, 3, 1, 0).to(x.dtype)
    b = torch.zeros(block_o, device=x.device, dtype=torch.float32)
    if bias is not None:
        b[:Cout] = bias.detach().float()
    ib = b if in_bias is None else in_bias.detach().to(x.dtype).contiguous()   # (b: any pointer, never read)
    y = torch.empty(B, Cout, H, W, device=x.device, dtype=x.dtype)
    _conv_kernel[(triton.cdiv(W, BLOCK_P), triton.cdiv(H, CONV_ROWS), B)](
        x, w, b, ib, y, C, H, W, Cout, *x.stride(), *y.stride(), BLOCK_P=BLOCK_P, BLOCK_C=block_c,
        BLOCK_O=block_o, ROWS=CONV_ROWS, RELU=relu, IN_BIAS=in_bias is not None, NATIVE=COMPILED, num_warps=4)
    return y


@torch.library.custom_op("mambast::conv3x3_reflect", mutates_args=(), tags=(torch.Tag.flexible_layout,))
def conv3x3_reflect_op(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                       relu: bool = True, in_bias: torch.Tensor | None = None) -> torch.Tensor:
    """The output layer as one opaque operator for torch.compile, taking x in whatever memory layout the compiled
    graph has it (flexible layout: no copy into the eager strides). Channels-last x (the layout the kernel is
    written for: 0.7 ms at 512² batch 16 on an H200) takes the Triton kernel, any other layout PyTorch's
    operators."""
    if x.stride(1) == 1:
        return conv3x3_reflect_triton(x, weight, bias, relu, in_bias)
    from .conv_ref import conv3x3_reflect_ref
    as_x = lambda t: None if t is None else t.to(x.dtype)   # noqa: E731
    return conv3x3_reflect_ref(x, as_x(weight), as_x(bias), relu, as_x(in_bias))


@conv3x3_reflect_op.register_fake
def _(x, weight, bias, relu=True, in_bias=None):
    return x.new_empty(x.shape[0], weight.shape[0], x.shape[2], x.shape[3])
