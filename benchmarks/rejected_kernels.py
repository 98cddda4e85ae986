"""Kernels tried for the GPU path and not kept, with the measurements that rejected them (CUDA machine, repo root).

    python benchmarks/rejected_kernels.py sequential-scan   # the scan stepping one row at a time vs the library

sequential-scan: an inference forward of the 2D selective scan that runs h = a_t h + b_t step by step
(UNROLL steps per loop turn, each step's row loaded with a scalar position) instead of composing a tile's
steps with tl.associative_scan. Fewer operations per state update and a third of the registers, but each
step waits on its own loads: on an H200 at L = 4096, Dm = 1024, N = 16 it took 0.62x the library's speed
at batch 16 and 0.1x at batch 1 (latency-bound; measured at commit adf0449, when batch 1 ran the library's
FEW_SEQUENCES_CONFIG, which `default_config` no longer gives it).

The fused depthwise conv + SiLU that was rejected here (adf0449: 160 against 383 us per call alone, no
measurable change in the model then) is in the library now (`mambast/ops/triton_conv.py`): measured again later,
compiled at 512² batch 16, it and the output-layer kernel took 1.17 ms off the kernel time of a batch (the
encoders alone, which have no output layer, 0.44 ms each; `benchmarks/profile_gpu.py --batch 16 --compile`).
The kernel is checked against a reference before it is timed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import triton
import triton.language as tl

REPO = Path(__file__).resolve().parents[1]
for p in (REPO, REPO / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from mambast.ops import triton_scan as ts  # noqa: E402
from mambast.ops.triton_scan import _softplus  # noqa: E402
from scan import rel_err  # noqa: E402

SIDE, DM, N = 64, 1024, 16          # 512² at patch 8: L = 4096 tokens, Dm scan channels, N states


def _ms(f):
    f()
    return triton.testing.do_bench(f, warmup=20, rep=300, return_mode="median")


# ------------------------------------------------------------------------------------- sequential scan

@triton.jit
def _scan_fwd_seq_kernel(
    u_ptr, delta_ptr, A2_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, out_ptr,
    L, H, W, Dm, N,
    su_b, su_l, su_d,
    sd_b, sd_k, sd_l, sd_d,
    sB_b, sB_k, sB_l, sB_n,
    sC_b, sC_k, sC_l, sC_n,
    UNROLL: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, N_LANES: tl.constexpr,
):
    NI: tl.constexpr = BLOCK_N // N_LANES
    pid_d = tl.program_id(0)
    k = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    rows = tl.arange(0, UNROLL)
    d_ok = d < Dm
    n3 = tl.arange(0, NI)[:, None, None] * N_LANES + tl.arange(0, N_LANES)[None, None, :]   # [NI, 1, NL]
    d3 = d[None, :, None]
    nd_ok = (n3 < N) & (d3 < Dm)
    n_ok = n3 < N

    A2 = tl.load(A2_ptr + (k * Dm + d3) * N + n3, mask=nd_ok, other=0.0)   # [NI, BD, NL]
    Dk = tl.load(D_ptr + k * Dm + d, mask=d_ok, other=0.0)
    bias = tl.load(bias_ptr + k * Dm + d, mask=d_ok, other=0.0)

    u_base = u_ptr + b * su_b + d * su_d
    dl_base = delta_ptr + b * sd_b + k * sd_k + d * sd_d
    B_base = B_ptr + b * sB_b + k * sB_k + n3 * sB_n
    C_base = C_ptr + b * sC_b + k * sC_k + n3 * sC_n
    out_base = out_ptr + b * L * Dm
    h = tl.zeros([NI, BLOCK_D, N_LANES], dtype=tl.float32)
    t0 = 0
    while t0 < L:
        ys = tl.zeros([UNROLL, BLOCK_D], dtype=tl.float32)
        for r in tl.static_range(UNROLL):
            t = t0 + r
            ok = t < L
            s = tl.where(k >= 2, L - 1 - t, t)
            p = tl.where(ok, tl.where(k % 2 == 1, (s % H) * W + s // H, s), 0)
            u_t = tl.load(u_base + p * su_l, mask=d_ok & ok, other=0.0).to(tl.float32)      # [BD]
            x_t = tl.load(dl_base + p * sd_l, mask=d_ok & ok, other=0.0).to(tl.float32)
            B_t = tl.load(B_base + p * sB_l, mask=n_ok & ok, other=0.0).to(tl.float32)     # [NI, 1, NL]
            C_t = tl.load(C_base + p * sC_l, mask=n_ok & ok, other=0.0).to(tl.float32)
            dt = tl.where(d_ok & ok, _softplus(x_t + bias), 0.0)
            a = tl.exp2(dt[None, :, None] * A2)
            h = a * h + (dt * u_t)[None, :, None] * B_t
            y = tl.sum(tl.sum(h * C_t, axis=0), axis=1) + Dk * u_t                           # [BD]
            ys = tl.where((rows == r)[:, None], y[None, :], ys)
        tv = t0 + rows
        tv_ok = tv < L
        sv = tl.where(k >= 2, L - 1 - tv, tv)
        pv = tl.where(tv_ok, tl.where(k % 2 == 1, (sv % H) * W + sv // H, sv), 0)
        tl.atomic_add(out_base + pv[:, None] * Dm + d[None, :], ys, mask=tv_ok[:, None] & d_ok[None, :],
                      sem="relaxed")
        t0 += UNROLL


def scan_seq(u, delta, A, B, C, D, delta_bias, H, W, unroll=8, block_d=32, lanes=1, warps=1, **launch):
    A2, D32, b32 = ts._inputs32(A, D, delta_bias)
    Bt, _, L, Dm = delta.shape
    N = A2.shape[-1]
    out = torch.zeros(Bt, L, Dm, device=u.device, dtype=torch.float32)
    block_n = triton.next_power_of_2(N)
    grid = (triton.cdiv(Dm, block_d), 4, Bt)
    scan_seq.kernel = _scan_fwd_seq_kernel[grid](
        u, delta, A2, B, C, D32, b32, out, L, H, W, Dm, N,
        *u.stride(), *delta.stride(), *B.stride(), *C.stride(),
        UNROLL=unroll, BLOCK_D=block_d, BLOCK_N=block_n, N_LANES=min(lanes, block_n), num_warps=warps, **launch)
    return out


def sequential_scan() -> None:
    import scan as bench
    bench.DEVICE = "cuda"
    side, Dm = SIDE, DM
    # small odd shape first: correctness against the library's forward
    xs = bench.make_inputs(2, 96, N, 5, 7, torch.bfloat16)
    ref = ts.selective_scan_2d_triton(*xs, 5, 7)
    got = scan_seq(*xs, 5, 7, unroll=4)
    print(f"odd shape: max rel. difference {rel_err(got, ref):.1e}")
    assert rel_err(got, ref) < 1e-5, "the sequential scan disagrees with the library's"
    configs = {16: [(u, bd, nl, w) for u in (4, 8, 16) for bd, nl, w in ((32, 1, 1), (64, 1, 2), (128, 1, 4),
                                                                       (32, 2, 2), (32, 4, 4))],
               1: [(u, bd, nl, w) for u in (4, 8, 16) for bd, nl, w in ((32, 4, 4), (16, 4, 2), (32, 2, 2),
                                                                      (16, 8, 4), (8, 16, 4))]}
    for bt, cfgs in configs.items():
        xs = bench.make_inputs(bt, Dm, N, side, side, torch.bfloat16)
        with torch.no_grad():
            ref = ts.selective_scan_2d_triton(*xs, side, side)
            f = lambda: ts.selective_scan_2d_triton(*xs, side, side)  # noqa: E731
            base = _ms(f)
            print(f"batch {bt:2d} library forward {ts.default_config(bt, Dm)}: {base:.3f} ms", flush=True)
            for un, bd, lanes, w in cfgs:
                try:
                    g = lambda: scan_seq(*xs, side, side, un, bd, lanes, w)  # noqa: E731
                    err = rel_err(g(), ref)
                    assert err < 1e-5, f"the sequential scan disagrees with the library's: {err:.1e}"
                    ms = _ms(g)
                    print(f"batch {bt:2d} seq unroll {un:2d} channels {bd:3d} lanes {lanes} warps {w}: {ms:.3f} ms "
                          f"({base / ms:.2f}x), {scan_seq.kernel.n_regs} registers, {scan_seq.kernel.n_spills} spills, "
                          f"max rel. difference {err:.1e}", flush=True)
                except Exception as e:  # a configuration that does not compile
                    print(f"batch {bt:2d} seq unroll {un} channels {bd} lanes {lanes} warps {w}: failed: "
                          f"{str(e).splitlines()[0][:120]}")


if __name__ == "__main__":
    runs = {"sequential-scan": sequential_scan}
    what = sys.argv[1] if len(sys.argv) > 1 else ""
    if what not in runs or not torch.cuda.is_available():
        raise SystemExit(__doc__)
    runs[what]()
