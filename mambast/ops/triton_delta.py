"""The step sizes of the four scan orders, fused in Triton: dt = softplus(dt_low @ W^T + bias).

The selective scan's step size per order k, position l and channel d is a rank-R projection of the
layer's input followed by softplus. Computing the softplus here, as the epilogue of the projection,
hands the scan finished step sizes: the projection's output must be written to memory anyway, and this
kernel (bound by that write) has its exp2/log2 units idle, while in the scan the same softplus would
take about a sixth of the exp2/log2 operations of a unit that is the scan's limit.
`delta_softplus_ref` below is the plain PyTorch definition.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .triton_scan import COMPILED, _DTYPES

N_ORDERS = 4
_K: tl.constexpr = tl.constexpr(N_ORDERS)
LOG2E: tl.constexpr = tl.constexpr(1.4426950408889634)


@triton.jit
def _softplus_poly(x, SHORT: tl.constexpr):
    # softplus(x) = max(x, 0) + log1p(exp(-|x|)): one exp2 and a polynomial on the multiply-add units (the exp2
    # unit is the scarcer one). Above x = 17, exp(-|x|) is below half an ulp of x. log1p(z) = z q(z) on [0, 1], q
    # the least-squares fit of log1p(z) / z at Chebyshev nodes with q(0) = 1; largest relative error of log1p in
    # float32: degree 8, 1.9e-7 (for float32 step sizes); SHORT, degree 5, 2.0e-5 (for 16-bit step sizes, whose
    # rounding afterwards is up to 3.9e-3 in bf16, and 4.9e-4 in fp16 down to its subnormals at 6e-5).
    z = tl.exp2(-tl.abs(x) * LOG2E)
    if SHORT:
        q = -0.023979755118489265 * z + 0.10150080919265747
        q = q * z - 0.210294708609581
        q = q * z + 0.32529568672180176
        q = q * z - 0.4993727207183838
    else:
        q = 0.005253501236438751 * z - 0.02958875149488449
        q = q * z + 0.07836219668388367
        q = q * z - 0.1367482841014862
        q = q * z + 0.1911146640777588
        q = q * z - 0.2484438270330429
        q = q * z + 0.33319273591041565
        q = q * z - 0.49999502301216125
    q = q * z + 1.0
    return tl.maximum(x, 0.0) + z * q


@triton.jit
def _delta_kernel(x_ptr, w_ptr, bias_ptr, out_ptr, L, Dm, R,
                  sx_b, sx_k, sx_l, sx_r, sw_k, sw_d, sw_r, so_b, so_k, so_l, so_d,
                  BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_R: tl.constexpr, NATIVE: tl.constexpr,
                  SHORT: tl.constexpr):
    pid_l = tl.program_id(0)
    pid_d = tl.program_id(1)
    b = (tl.program_id(2) // _K).to(tl.int64)
    k = (tl.program_id(2) % _K).to(tl.int64)     # 4 L Dm may pass 2^31 (one order's L Dm may not)
    l = pid_l * BLOCK_L + tl.arange(0, BLOCK_L)
    d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    r = tl.arange(0, BLOCK_R)
    x = tl.load(x_ptr + b * sx_b + k * sx_k + l[:, None] * sx_l + r[None, :] * sx_r,
                mask=(l[:, None] < L) & (r[None, :] < R), other=0.0)                          # [BL, BR]
    w = tl.load(w_ptr + k * sw_k + r[:, None] * sw_r + d[None, :] * sw_d,
                mask=(r[:, None] < R) & (d[None, :] < Dm), other=0.0).to(x.dtype)            # [BR, BD]
    if NATIVE:   # 16-bit tiles: exact products, float32 sums
        acc = tl.dot(x, w)
    else:        # float32 (IEEE products), or the interpreter
        acc = tl.dot(x.to(tl.float32), w.to(tl.float32), input_precision="ieee")
    acc += tl.load(bias_ptr + k * Dm + d, mask=d < Dm, other=0.0)[None, :]
    tl.store(out_ptr + b * so_b + k * so_k + l[:, None] * so_l + d[None, :] * so_d,
             _softplus_poly(acc, SHORT).to(out_ptr.dtype.element_ty), mask=(l[:, None] < L) & (d[None, :] < Dm))


def delta_softplus_ref(dt_low: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """softplus(dt_low @ weight^T + bias) per order: dt_low [Bt, 4, L, R], weight [4, Dm, R], bias [4, Dm]
    -> [Bt, 4, L, Dm] in dt_low's dtype (weight rounded to that dtype; the product and softplus in float32)."""
    x = dt_low.float() @ weight.to(dt_low.dtype).float().transpose(1, 2) + bias.float()[None, :, None, :]
    return torch.nn.functional.softplus(x).to(dt_low.dtype)


DELTA_BLOCK = (128, 64, 4)   # positions, channels and warps per program (the fastest of a sweep at 512² batch 16)


def delta_softplus_triton(dt_low: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, *,
                          block: tuple[int, int, int] = DELTA_BLOCK) -> torch.Tensor:
    """`delta_softplus_ref` in one launch (an opaque operator for torch.compile); no autograd.
    Any strides; float32, bfloat16 or float16 dt_low (the weight is rounded to its dtype first, as autocast's
    product rounds it); the result has dt_low's dtype."""
    Bt, K, L, R = dt_low.shape
    Dm = weight.shape[1]
    if K != N_ORDERS or tuple(weight.shape) != (N_ORDERS, Dm, R) or tuple(bias.shape) != (N_ORDERS, Dm):
        raise ValueError(f"expected dt_low [Bt, 4, L, R], weight [4, Dm, R], bias [4, Dm]; got "
                         f"{tuple(dt_low.shape)}, {tuple(weight.shape)}, {tuple(bias.shape)}")
    for name, t in (("dt_low", dt_low), ("weight", weight), ("bias", bias)):
        if t.dtype not in _DTYPES:
            raise TypeError(f"{name} must be float32, bfloat16 or float16; got {t.dtype}")
        if t.device != dt_low.device:
            raise ValueError(f"{name} is on {t.device} but dt_low is on {dt_low.device}")
    if L * Dm >= 2 ** 31:
        raise ValueError(f"{L} positions x {Dm} channels is too large (must stay below 2^31)")
    if len(block) != 3 or any(v < 1 or v & (v - 1) for v in block) or min(block[:2]) < 16:
        raise ValueError(f"block must be (positions, channels, warps), powers of two, positions and channels >= 16 "
                         f"(tl.dot's smallest tile); got {block}")
    return _delta_softplus(dt_low, weight, bias, list(block))


@torch.library.custom_op("mambast::delta_softplus", mutates_args=())
def _delta_softplus(dt_low: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, block: list[int]) -> torch.Tensor:
    return _launch(dt_low, weight, bias, block)


def _launch(dt_low, weight, bias, block, native=None, short=None):
    """native: 16-bit tile products (default: for 16-bit dt_low when compiled: the CPU interpreter's products of
    bf16 tiles are wrong in Triton 3.6, so there the tiles are multiplied in float32); short: the degree-5 polynomial
    (default: for 16-bit results). Explicit values are for experiments (docs/performance.md)."""
    Bt, K, L, R = dt_low.shape
    Dm = weight.shape[1]
    low_precision = dt_low.dtype != torch.float32
    out = torch.empty(Bt, K, L, Dm, device=dt_low.device, dtype=dt_low.dtype)
    block_l, block_d, warps = block
    grid = (triton.cdiv(L, block_l), triton.cdiv(Dm, block_d), Bt * K)
    _delta_kernel[grid](dt_low, weight, bias.float().contiguous(), out, L, Dm, R, *dt_low.stride(), *weight.stride(),
                        *out.stride(), BLOCK_L=block_l, BLOCK_D=block_d, BLOCK_R=max(16, triton.next_power_of_2(R)),
                        NATIVE=low_precision and COMPILED if native is None else native,
                        SHORT=low_precision if short is None else short, num_warps=warps)
    return out


@_delta_softplus.register_fake
def _(dt_low, weight, bias, block):
    Bt, K, L, _ = dt_low.shape
    return dt_low.new_empty(Bt, K, L, weight.shape[1])
