"""The inference scan (step sizes given) written in Gluon with explicit layouts: tried, not kept (CUDA machine, repo
root; Gluon kernels do not run in Triton's CPU interpreter).

    python benchmarks/rejected_gluon_scan.py

Why it was tried: the library's Triton forward lets the compiler pick the layouts, and the compiled loop moves the
B and C rows and the per-step values between layouts through shared memory (about 50 shared-memory instructions
and 5 barriers per tile). Here one parent layout [TILE, N, BLOCK_D] (time and the states in each thread's
registers, CPT channels per thread over the lanes and warps) gives every tensor a slice of it: u, dt and y are
[TILE, BLOCK_D], h and A are [N, BLOCK_D], and B and C are [TILE, N] replicated in every thread, loaded straight
into registers; nothing changes layout, and the loop has no barrier. B and C are taken in float32 (the bf16 ->
float32 conversion of 2 x TILE x N values per thread per tile otherwise costs more than the shared-memory
broadcast it replaces: B.float() and C.float() take 0.033 ms per call at batch 16).

Measured on an H200 at 512² batch 16 (L = 4096, Dm = 1024, N = 16, bf16; commit 8858d51's kernels;
`results/gluon-scan-h200.log`): the library's GIVEN_STEPS_CONFIG 1.752 ms without FMA decays (1.691 with its one
FMA decay per thread); the best Gluon variant (tile 4, 2 channels per thread, 2 warps, B and C float32) 1.730 ms,
with 1 warp 1.753 ms, with bf16 B and C 1.865 ms, the others 2.21-7.1 ms.
Nsight Compute on the library's kernel (given step sizes, no FMA decays): 1.80 warps per scheduler, issue active
58 %, the exp2 unit 63 % busy, and the main stall waiting on fixed-latency dependencies (0.97 cycles per issued
instruction): the layout conversions were not what bounds it.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl

REPO = Path(__file__).resolve().parents[1]
for p in (REPO, REPO / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from mambast.ops import triton_scan as ts  # noqa: E402
import scan as bench  # noqa: E402

bench.DEVICE = "cuda"

SIDE, DM, N = 64, 1024, 16          # 512² at patch 8: L = 4096 tokens, Dm scan channels, N states
VARIANTS = [  # (tile, channels per thread, warps, B and C in float32)
    (4, 2, 2, True), (4, 2, 1, True), (4, 2, 1, False), (2, 2, 4, True), (2, 2, 2, True), (2, 2, 1, True),
    (2, 4, 1, True), (4, 1, 2, True), (8, 1, 1, True)]


@gluon.jit
def _compose(a1, b1, a2, b2):
    return a1 * a2, b1 * a2 + b2


@gluon.jit
def _tile_positions(c, k, L, H, W, rows, TILE: gl.constexpr):
    """Row-major positions read by the TILE steps of tile c of order k (0 past the end), and which are in range.
    Assumes H % TILE == 0, so a tile of a column-major order lies in one column: positions are affine in the row."""
    s0 = gl.where(k >= 2, L - 1 - c * TILE, c * TILE)
    base = gl.where(k % 2 == 1, (s0 % H) * W + s0 // H, s0)
    step = gl.where(k % 2 == 1, W, 1) * gl.where(k >= 2, -1, 1)
    t = c * TILE + rows
    return gl.where(t < L, base + rows * step, 0), t < L


@gluon.jit
def _scan_fwd_gluon(
    u_ptr, dt_ptr, A2_ptr, B_ptr, C_ptr, D_ptr, out_ptr,
    L, H, W, Dm, n_tiles,
    su_b, su_l, sd_b, sd_k, sd_l, sB_b, sB_k, sB_l, sC_b, sC_k, sC_l,
    TILE: gl.constexpr, N: gl.constexpr, CPT: gl.constexpr, WARPS: gl.constexpr,
):
    # contiguous channels and states (unit strides), Dm a multiple of BLOCK_D, N a power of two
    BLOCK_D: gl.constexpr = CPT * 32 * WARPS
    P: gl.constexpr = gl.BlockedLayout([TILE, N, CPT], [1, 1, 32], [1, 1, WARPS], [2, 1, 0])
    TD: gl.constexpr = gl.SliceLayout(1, P)      # [TILE, BLOCK_D]: u, dt, y
    TN: gl.constexpr = gl.SliceLayout(2, P)      # [TILE, N]: B, C, replicated in every thread
    ND: gl.constexpr = gl.SliceLayout(0, P)      # [N, BLOCK_D]: A, h
    k = gl.program_id(1)
    b = gl.program_id(2).to(gl.int64)
    d_td = gl.program_id(0) * BLOCK_D + gl.arange(0, BLOCK_D, layout=gl.SliceLayout(0, TD))
    d_nd = gl.program_id(0) * BLOCK_D + gl.arange(0, BLOCK_D, layout=gl.SliceLayout(0, ND))
    n_nd = gl.arange(0, N, layout=gl.SliceLayout(1, ND))
    n_tn = gl.expand_dims(gl.arange(0, N, layout=gl.SliceLayout(0, TN)), 0)
    rows_td = gl.arange(0, TILE, layout=gl.SliceLayout(1, TD))
    rows_tn = gl.arange(0, TILE, layout=gl.SliceLayout(1, TN))
    rows_p = gl.arange(0, TILE, layout=gl.SliceLayout(1, gl.SliceLayout(2, P)))
    first = gl.expand_dims(gl.expand_dims(rows_p == 0, 1), 2)
    last = gl.expand_dims(gl.expand_dims(rows_p == TILE - 1, 1), 2)

    A2 = gl.load(A2_ptr + (k * Dm + gl.expand_dims(d_nd, 0)) * N + gl.expand_dims(n_nd, 1))
    Dk = gl.expand_dims(gl.load(D_ptr + k * Dm + d_td), 0)
    u_base = u_ptr + b * su_b + gl.expand_dims(d_td, 0)
    dt_base = dt_ptr + b * sd_b + k.to(gl.int64) * sd_k + gl.expand_dims(d_td, 0)
    B_base = B_ptr + b * sB_b + k * sB_k + n_tn
    C_base = C_ptr + b * sC_b + k * sC_k + n_tn
    out_base = out_ptr + b * L * Dm + gl.expand_dims(d_td, 0)

    h = gl.zeros([N, BLOCK_D], gl.float32, layout=ND)
    p_td, ok = _tile_positions(0, k, L, H, W, rows_td, TILE)
    p_tn, _unused = _tile_positions(0, k, L, H, W, rows_tn, TILE)
    p_td = gl.expand_dims(p_td, 1)
    p_tn = gl.expand_dims(p_tn, 1)
    u = gl.load(u_base + p_td * su_l).to(gl.float32)
    dt = gl.load(dt_base + p_td * sd_l).to(gl.float32)
    Bt = gl.load(B_base + p_tn * sB_l).to(gl.float32)
    Ct = gl.load(C_base + p_tn * sC_l).to(gl.float32)
    c = 0
    while c < n_tiles:   # the next tile's inputs are loaded while this one is computed
        q_td, ok_nx = _tile_positions(c + 1, k, L, H, W, rows_td, TILE)
        q_tn, _unused = _tile_positions(c + 1, k, L, H, W, rows_tn, TILE)
        q_td = gl.expand_dims(q_td, 1)
        q_tn = gl.expand_dims(q_tn, 1)
        u_nx = gl.load(u_base + q_td * su_l).to(gl.float32)
        dt_nx = gl.load(dt_base + q_td * sd_l).to(gl.float32)
        B_nx = gl.load(B_base + q_tn * sB_l).to(gl.float32)
        C_nx = gl.load(C_base + q_tn * sC_l).to(gl.float32)

        td_ok = gl.expand_dims(ok, 1) & gl.expand_dims(d_td < Dm, 0)
        dt = gl.where(td_ok, dt, 0.0)
        a = gl.exp2(gl.expand_dims(dt, 1) * gl.expand_dims(A2, 0))         # [TILE, N, BLOCK_D]
        bx = gl.expand_dims(dt * u, 1) * gl.expand_dims(Bt, 2)
        bx = gl.where(first, bx + a * gl.expand_dims(h, 0), bx)
        _, hs = gl.associative_scan((a, bx), 0, _compose)
        y = gl.sum(hs * gl.expand_dims(Ct, 2), axis=1) + Dk * u
        gl.atomic_add(out_base + p_td * Dm, y, mask=td_ok, sem="relaxed")
        h = gl.sum(gl.where(last, hs, 0.0), axis=0)

        p_td, p_tn, ok, u, dt, Bt, Ct = q_td, q_tn, ok_nx, u_nx, dt_nx, B_nx, C_nx
        c += 1


def gluon_scan(u, dt, A2, B, C, D32, H, W, tile, cpt, warps):
    Bt, _, L, Dm = dt.shape
    assert H % tile == 0 and Dm % (cpt * 32 * warps) == 0 and u.stride(2) == dt.stride(3) == 1
    assert B.stride(3) == C.stride(3) == 1
    out = torch.zeros(Bt, L, Dm, device=u.device, dtype=torch.float32)
    _scan_fwd_gluon[(Dm // (cpt * 32 * warps), 4, Bt)](
        u, dt, A2, B, C, D32, out, L, H, W, Dm, triton.cdiv(L, tile),
        u.stride(0), u.stride(1), dt.stride(0), dt.stride(1), dt.stride(2),
        B.stride(0), B.stride(1), B.stride(2), C.stride(0), C.stride(1), C.stride(2),
        TILE=tile, N=A2.shape[-1], CPT=cpt, WARPS=warps, num_warps=warps)
    return out


def _ms(f):
    f()
    return triton.testing.do_bench(f, warmup=20, rep=300, return_mode="median")


def main() -> None:
    bt = 16
    u, delta, A, B, C, D, bias = bench.make_inputs(bt, DM, N, SIDE, SIDE, torch.bfloat16)
    A2, D32, b32 = ts._inputs32(A, D, bias)
    dt = torch.nn.functional.softplus(delta.float() + b32[None, :, None, :]).bfloat16()
    zero = torch.zeros_like(b32)
    Bf, Cf = B.float(), C.float()
    with torch.no_grad():
        for n in (0, ts.GIVEN_STEPS_CONFIG.fma_decays_fwd):
            cfg = dataclasses.replace(ts.GIVEN_STEPS_CONFIG, fma_decays_fwd=n)
            f = lambda cfg=cfg: ts._launch_fwd(u, dt, A2, B, C, D32, zero, SIDE, SIDE, cfg, False, False)[0]  # noqa: E731
            print(f"library, batch {bt}, {cfg}: {_ms(f):.3f} ms", flush=True)
        ref = f()
        print(f"B, C to float32: {_ms(lambda: (B.float(), C.float())):.3f} ms per call", flush=True)
        for tile, cpt, warps, f32 in VARIANTS:
            Bx, Cx = (Bf, Cf) if f32 else (B, C)
            g = lambda: gluon_scan(u, dt, A2, Bx, Cx, D32, SIDE, SIDE, tile, cpt, warps)  # noqa: E731
            err = bench.rel_err(g(), ref)
            assert err < 1e-5, f"Gluon scan differs from the library's: {err:.1e}"
            print(f"Gluon, tile {tile}, {cpt} channels per thread, {warps} warps, B and C "
                  f"{'float32' if f32 else 'bf16'}: {_ms(g):.3f} ms (max rel. difference {err:.1e})", flush=True)


if __name__ == "__main__":
    if not torch.cuda.is_available():
        raise SystemExit(__doc__)
    main()
