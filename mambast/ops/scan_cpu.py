"""Fused CPU selective scan: `selective_scan_2d_ref` in one multi-threaded numba kernel.

The kernel is forward only; with gradients needed the forward still runs it and the backward recomputes through
the reference (so a forward in grad mode costs about what inference does). numba is imported on the first call,
never on import (without it: the reference).
"""

from __future__ import annotations

import threading
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from .scan_ref import N_ORDERS, scan_orders, selective_scan_2d_ref

__all__ = ["selective_scan_2d_cpu", "kernel_available"]

LANES = 16          # channels per vector: the kernel's unit of work, one AVX-512 register (two on AVX2)
PREFETCH = 4        # how many scan steps ahead the next inputs are prefetched
_LOG2E = 1.4426950408889634
_MAGIC = 12582912.0  # 1.5 * 2**23: adding it rounds a float32 in (-2**22, 2**22) to an integer
# 2**f ~= 1 + f * P(f) on [-1/2, 1/2] (fit of (2**f - 1) / f, relative error 4e-7)
_EXP2_POLY = (0.6931472, 0.24022421, 0.05550367, 0.009661, 0.00133857)
# atanh(s) / s ~= Q(s**2) for s in [0, 1/3] (relative error 1e-8): log1p(e) = 2 s Q(s^2), s = e / (2 + e)
_ATANH_POLY = (1.0, 0.3333312, 0.20013225, 0.13976501, 0.14082725)

_kernel = None       # the compiled kernel once built; False when numba cannot be imported
_build_lock = threading.Lock()
# numba's parallel loop and the vector operations; bound by `_build` (placeholders keep the module importable)
prange = range
_vload = _vstore = _vbroadcast = _splat = _prefetch = _fma = _vabs = _vmax = _any_gt = _add_exponent = None


def selective_scan_2d_cpu(u, delta, A, B, C, D, delta_bias, H: int, W: int) -> torch.Tensor:
    """Four-direction selective scan on CPU; same arguments, shapes and result as `selective_scan_2d_ref`.

    u: [Bt, L, Dm]; delta: [Bt, 4, L, Dm] raw (softplus(delta + delta_bias) inside); A: [4, Dm, N] (<= 0);
    B, C: [Bt, 4, L, N]; D, delta_bias: [4, Dm]; L = H * W. Any float dtype in, float32 math and state,
    returns y: [Bt, L, Dm] float32. Differentiable: the backward recomputes the reference's forward and
    differentiates it (the gradients are the reference's).
    """
    _check_args(u, delta, A, B, C, D, delta_bias, H, W)
    tensors = (u, delta, A, B, C, D, delta_bias)
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        return _ScanCpuRefBackward.apply(*tensors, int(H), int(W))
    return _scan_cpu(*tensors, int(H), int(W))


class _ScanCpuRefBackward(torch.autograd.Function):
    """Forward: the fused kernel; backward: autograd through the reference, recomputed from the saved inputs."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, delta_bias, H, W):
        ctx.save_for_backward(u, delta, A, B, C, D, delta_bias)
        ctx.H, ctx.W = H, W
        return _scan_cpu(u, delta, A, B, C, D, delta_bias, H, W)

    @staticmethod
    @torch.autograd.function.once_differentiable   # the recomputed reference is not kept for a second derivative
    def backward(ctx, gy):
        inputs = [t.detach().requires_grad_(need) for t, need in zip(ctx.saved_tensors, ctx.needs_input_grad)]
        wanted = [t for t in inputs if t.requires_grad]
        with torch.enable_grad():
            y = selective_scan_2d_ref(*inputs, ctx.H, ctx.W)
            grads = iter(torch.autograd.grad(y, wanted, gy))
        return (*(next(grads) if t.requires_grad else None for t in inputs), None, None)


@torch.library.custom_op("mambast::selective_scan_2d_cpu", mutates_args=())
def _scan_cpu(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
              D: torch.Tensor, delta_bias: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """The scan as one opaque operator (torch.compile keeps it whole instead of tracing into numba)."""
    kernel = _get_kernel()
    if kernel is False or not bool(torch.isfinite(A).all() and (A <= 0).all()):
        # no numba, or A outside the model's range (the kernel's exp assumes dt * A <= 0)
        return selective_scan_2d_ref(u, delta, A, B, C, D, delta_bias, H, W).contiguous()   # as the fake says

    Bt, L, Dm = u.shape
    N = A.shape[-1]
    pad = -Dm % LANES
    u = _f32(u, pad)                                                   # [Bt, L, Dmp]
    delta = _f32(delta, pad)                                           # [Bt, 4, L, Dmp]
    bias, Dv = _f32(delta_bias, pad), _f32(D, pad)                     # [4, Dmp]
    a2 = _f32(A.detach().float().transpose(1, 2) * _LOG2E, pad)        # [4, N, Dmp]: exp(dt A) = 2 ** (dt a2)
    Bm, Cm = _f32(B, 0), _f32(C, 0)                                    # [Bt, 4, L, N]
    perm = scan_orders(H, W).contiguous()                              # [4, L] int64
    y = torch.empty(Bt, L, Dm + pad, dtype=torch.float32)

    import numba
    torch_threads = torch.get_num_threads()
    numba.set_num_threads(max(1, min(torch_threads, numba.config.NUMBA_NUM_THREADS)))
    try:
        with numba.parallel_chunksize(1):  # one 16-channel block at a time: balances busy cores
            kernel(*(t.numpy().reshape(-1) for t in (u, delta, bias, a2, Bm, Cm, Dv, perm, y)),
                   Bt, L, Dm + pad, N)
    finally:  # numba's first parallel call resets the OpenMP thread count that torch shares with it
        if torch.get_num_threads() != torch_threads:
            torch.set_num_threads(torch_threads)
    return y[..., :Dm].contiguous() if pad else y


@_scan_cpu.register_fake
def _(u, delta, A, B, C, D, delta_bias, H, W):
    return u.new_empty(u.shape, dtype=torch.float32)


def kernel_available() -> bool:
    """True when numba is importable, i.e. `selective_scan_2d_cpu` runs the fused kernel."""
    return _get_kernel() is not False


def _check_args(u, delta, A, B, C, D, delta_bias, H, W) -> None:
    ts = {"u": u, "delta": delta, "A": A, "B": B, "C": C, "D": D, "delta_bias": delta_bias}
    for name, t in ts.items():
        if not isinstance(t, torch.Tensor) or t.device.type != "cpu" or not t.is_floating_point():
            raise ValueError(f"{name} must be a floating-point CPU tensor")
    if delta.dim() != 4 or delta.shape[1] != N_ORDERS:
        raise ValueError(f"delta must be [Bt, 4, L, Dm]; got {tuple(delta.shape)}")
    Bt, _, L, Dm = delta.shape
    if L != H * W:
        raise ValueError(f"H * W must equal L = {L}; got H={H}, W={W}")
    N = A.shape[-1] if A.dim() == 3 else -1
    expected = {"u": (Bt, L, Dm), "A": (N_ORDERS, Dm, N), "B": (Bt, N_ORDERS, L, N), "C": (Bt, N_ORDERS, L, N),
                "D": (N_ORDERS, Dm), "delta_bias": (N_ORDERS, Dm)}
    for name, shape in expected.items():
        if tuple(ts[name].shape) != shape:
            raise ValueError(f"{name} must have shape {shape} (from delta {tuple(delta.shape)} and A's last "
                             f"dimension); got {tuple(ts[name].shape)}")


def _f32(t: torch.Tensor, pad: int) -> torch.Tensor:
    """Contiguous float32 without autograd history, the last dimension zero-padded by `pad`."""
    t = t.detach().to(torch.float32)
    return (F.pad(t, (0, pad)) if pad else t).contiguous()


def _get_kernel():
    """The compiled kernel (built once per process), or False if numba is unavailable."""
    global _kernel
    if _kernel is None:
        with _build_lock:
            if _kernel is None:
                try:
                    import numba  # noqa: F401
                except ImportError:
                    warnings.warn("numba is not installed: selective_scan_2d_cpu falls back to the slow reference "
                                  "scan (pip install numba)", RuntimeWarning, stacklevel=3)
                    _kernel = False
                else:
                    _kernel = _build()
    return _kernel


# ----------------------------------------------------------------------------------------------------------
# The kernel. Plain Python until `_build` compiles it; the helpers below it are jitted there and replace
# their Python definitions in this module, so that the kernel refers to them as compile-time globals.
# A vector is 16 float32 lanes (an LLVM <16 x float>); `_vload(arr, i)` reads arr[i:i + 16].
#
# Work split: one parallel item per (batch, block of 16 channels); it runs the four orders one after the
# other and owns y[b, :, block], so items never race. State h: [N, 16] in a small buffer. Per step t the
# next step's delta/u are loaded and its softplus computed before this step's recurrence (their latency
# hides behind it), and the inputs PREFETCH steps ahead are prefetched (rows are Dm floats apart).
# exp(dt A) = 2 ** (dt a2): round to k + f with f in [-1/2, 1/2], 2 ** f by a polynomial, k into the
# exponent bits. Steps where some dt * a2 could fall below -124 take the clamped path (exp -> ~0).
# ----------------------------------------------------------------------------------------------------------

def _scan_kernel(u, delta, bias, a2, bm, cm, dv, perm, y, batch, length, dm, n_state):
    """Flat float32 arrays: u, y [Bt, L, Dm]; delta [Bt, 4, L, Dm]; bias, dv [4, Dm]; a2 [4, N, Dm];
    bm, cm [Bt, 4, L, N]; perm [4, L] int64. Dm is a multiple of 16."""
    n_blocks = dm // LANES
    for item in prange(batch * n_blocks):
        b = item // n_blocks
        c0 = (item - b * n_blocks) * LANES                  # first channel of this block
        h = np.empty(n_state * LANES, np.float32)            # state [N, 16]
        for k in range(N_ORDERS):
            h[:] = 0.0
            a_max = np.float32(1e-30)                          # largest |a2| of this block and order
            for i in range(n_state * LANES):
                a_max = max(a_max, -a2[(k * n_state + i // LANES) * dm + c0 + i % LANES])
            dt_fast = _splat(np.float32(124.0) / a_max)        # dt <= dt_fast: no dt * a2 below -124
            seq = (b * N_ORDERS + k) * length                  # row of (b, k, position 0) in delta, bm, cm
            a_row = k * n_state * dm + c0
            bias_k = _vload(bias, k * dm + c0)
            d_k = _vload(dv, k * dm + c0)
            p = perm[k * length]
            u_t = _vload(u, (b * length + p) * dm + c0)
            dt = _softplus(_vload(delta, (seq + p) * dm + c0) + bias_k)
            for t in range(length):
                if t + PREFETCH < length:
                    q = perm[k * length + t + PREFETCH]
                    _prefetch(u, (b * length + q) * dm + c0)
                    _prefetch(delta, (seq + q) * dm + c0)
                    _prefetch(y, (b * length + q) * dm + c0)
                    _prefetch(bm, (seq + q) * n_state)
                    _prefetch(cm, (seq + q) * n_state)
                p_next = perm[k * length + min(t + 1, length - 1)]
                u_next = _vload(u, (b * length + p_next) * dm + c0)
                dt_next = _softplus(_vload(delta, (seq + p_next) * dm + c0) + bias_k)

                du = dt * u_t
                bc = (seq + p) * n_state
                acc = _splat(np.float32(0.0))
                if _any_gt(dt, dt_fast):
                    for n in range(n_state):
                        hn = _fma(_exp2_clamped(dt * _vload(a2, a_row + n * dm)), _vload(h, n * LANES),
                                  du * _vbroadcast(bm, bc + n))
                        _vstore(h, n * LANES, hn)
                        acc = _fma(hn, _vbroadcast(cm, bc + n), acc)
                else:
                    for n in range(n_state):
                        hn = _fma(_exp2_above_m125(dt * _vload(a2, a_row + n * dm)), _vload(h, n * LANES),
                                  du * _vbroadcast(bm, bc + n))
                        _vstore(h, n * LANES, hn)
                        acc = _fma(hn, _vbroadcast(cm, bc + n), acc)
                out = (b * length + p) * dm + c0
                y_t = _fma(d_k, u_t, acc)
                if k > 0:
                    y_t = y_t + _vload(y, out)
                _vstore(y, out, y_t)
                p, u_t, dt = p_next, u_next, dt_next


def _poly_exp2(f):
    """2 ** f for f in [-1/2, 1/2]."""
    c = _EXP2_POLY
    p = _fma(_splat(np.float32(c[4])), f, _splat(np.float32(c[3])))
    p = _fma(p, f, _splat(np.float32(c[2])))
    p = _fma(p, f, _splat(np.float32(c[1])))
    p = _fma(p, f, _splat(np.float32(c[0])))
    return _fma(p, f, _splat(np.float32(1.0)))


def _exp2_above_m125(x):
    """2 ** x for -125 <= x < 128 (beyond: garbage)."""
    r = x + _splat(np.float32(_MAGIC))                   # round(x) sits in r's low mantissa bits
    f = x - (r - _splat(np.float32(_MAGIC)))             # x - round(x), exact
    return _add_exponent(_poly_exp2(f), r)


def _exp2_clamped(x):
    """2 ** x for x < 128; below -125 it returns ~2e-38 instead of underflowing."""
    return _exp2_above_m125(_vmax(x, _splat(np.float32(-125.0))))


def _softplus(z):
    """log(1 + exp(z)) = max(z, 0) + log1p(e), e = exp(-|z|), accurate also for tiny e."""
    e = _exp2_clamped(_vabs(z) * _splat(np.float32(-_LOG2E)))
    s = e / (_splat(np.float32(2.0)) + e)
    w = s * s
    c = _ATANH_POLY
    q = _fma(_splat(np.float32(c[4])), w, _splat(np.float32(c[3])))
    q = _fma(q, w, _splat(np.float32(c[2])))
    q = _fma(q, w, _splat(np.float32(c[1])))
    q = _fma(q, w, _splat(np.float32(c[0])))
    return _fma(s + s, q, _vmax(z, _splat(np.float32(0.0))))


_JITTED_HELPERS = ("_poly_exp2", "_exp2_above_m125", "_exp2_clamped", "_softplus")


def _build():
    """Import numba, define the 16-lane vector type and its operations, compile the kernel (or load it
    from numba's on-disk cache)."""
    import operator

    import numba
    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    from numba.core.extending import intrinsic, models, overload, register_model

    vf = ir.VectorType(ir.FloatType(), LANES)
    vi = ir.VectorType(ir.IntType(32), LANES)
    i32 = ir.IntType(32)

    class Vec(types.Type):
        def __init__(self):
            super().__init__(name=f"float32x{LANES}")

    vec = Vec()

    @register_model(Vec)
    class VecModel(models.PrimitiveModel):
        def __init__(self, dmm, fe_type):
            super().__init__(dmm, fe_type, vf)

    def llvm_fn(builder, name, ret, args):
        return cgutils.get_or_insert_function(builder.module, ir.FunctionType(ret, args), name)

    def element_ptr(context, builder, arrty, arr, index):
        return builder.gep(context.make_array(arrty)(context, builder, arr).data, [index])

    def splat(builder, x):
        v = builder.insert_element(ir.Constant(vf, ir.Undefined), x, ir.Constant(i32, 0))
        return builder.shuffle_vector(v, ir.Constant(vf, ir.Undefined), ir.Constant(vi, [0] * LANES))

    @intrinsic
    def vload(typingctx, arr, index):
        def codegen(context, builder, sig, args):
            ptr = element_ptr(context, builder, sig.args[0], args[0], args[1])
            return builder.load(builder.bitcast(ptr, vf.as_pointer()), align=4)
        return vec(arr, types.intp), codegen

    @intrinsic
    def vstore(typingctx, arr, index, v):
        def codegen(context, builder, sig, args):
            ptr = element_ptr(context, builder, sig.args[0], args[0], args[1])
            builder.store(args[2], builder.bitcast(ptr, vf.as_pointer()), align=4)
            return context.get_dummy_value()
        return types.none(arr, types.intp, vec), codegen

    @intrinsic
    def vbroadcast(typingctx, arr, index):
        def codegen(context, builder, sig, args):
            return splat(builder, builder.load(element_ptr(context, builder, sig.args[0], args[0], args[1])))
        return vec(arr, types.intp), codegen

    @intrinsic
    def vsplat(typingctx, x):
        def codegen(context, builder, sig, args):
            return splat(builder, context.cast(builder, args[0], sig.args[0], types.float32))
        return vec(x), codegen

    @intrinsic
    def prefetch(typingctx, arr, index):
        def codegen(context, builder, sig, args):
            ptr = builder.bitcast(element_ptr(context, builder, sig.args[0], args[0], args[1]),
                                  ir.IntType(8).as_pointer())
            fn = builder.module.declare_intrinsic("llvm.prefetch", [ptr.type],
                                                  ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32]))
            builder.call(fn, [ptr, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
            return context.get_dummy_value()
        return types.none(arr, types.intp), codegen

    @intrinsic
    def vfma(typingctx, a, b, c):
        def codegen(context, builder, sig, args):
            return builder.call(llvm_fn(builder, f"llvm.fma.v{LANES}f32", vf, [vf] * 3), list(args))
        return vec(vec, vec, vec), codegen

    @intrinsic
    def vabs(typingctx, a):
        def codegen(context, builder, sig, args):
            return builder.call(llvm_fn(builder, f"llvm.fabs.v{LANES}f32", vf, [vf]), list(args))
        return vec(vec), codegen

    @intrinsic
    def vmax(typingctx, a, b):
        def codegen(context, builder, sig, args):
            return builder.select(builder.fcmp_ordered(">", args[0], args[1]), args[0], args[1])
        return vec(vec, vec), codegen

    @intrinsic
    def any_gt(typingctx, a, b):
        def codegen(context, builder, sig, args):
            mask = builder.bitcast(builder.fcmp_ordered(">", args[0], args[1]), ir.IntType(LANES))
            return builder.icmp_unsigned("!=", mask, ir.Constant(ir.IntType(LANES), 0))
        return types.boolean(vec, vec), codegen

    @intrinsic
    def add_exponent(typingctx, p, r):
        """p * 2**k where k = round(x) sits in the low bits of r = x + _MAGIC: bits(p) + (bits(r) << 23)."""
        def codegen(context, builder, sig, args):
            k = builder.shl(builder.bitcast(args[1], vi), ir.Constant(vi, [23] * LANES))
            return builder.bitcast(builder.add(builder.bitcast(args[0], vi), k), vf)
        return vec(vec, vec), codegen

    def binary(op):
        @intrinsic
        def vop(typingctx, a, b):
            def codegen(context, builder, sig, args):
                return getattr(builder, op)(args[0], args[1])
            return vec(vec, vec), codegen

        def impl(a, b):
            if a == vec and b == vec:
                return lambda a, b: vop(a, b)
        return impl

    for pyop, llop in ((operator.add, "fadd"), (operator.sub, "fsub"), (operator.mul, "fmul"),
                       (operator.truediv, "fdiv")):
        overload(pyop)(binary(llop))

    g = globals()
    g.update(prange=numba.prange, _vload=vload, _vstore=vstore, _vbroadcast=vbroadcast,
             _splat=vsplat, _prefetch=prefetch, _fma=vfma, _vabs=vabs, _vmax=vmax, _any_gt=any_gt,
             _add_exponent=add_exponent)
    for name in _JITTED_HELPERS:
        g[name] = numba.njit(inline="always")(g[name])
    options = dict(parallel=True, error_model="numpy")
    try:
        return numba.njit(cache=True, **options)(_scan_kernel)
    except RuntimeError:  # no writable cache directory: compile in memory on every run
        return numba.njit(**options)(_scan_kernel)
