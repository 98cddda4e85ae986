"""Fused Triton kernels for the four-direction selective scan, forward and backward: the GPU fast path.

Computes exactly `selective_scan_2d_ref`; imports Triton at module level, so import it only on CUDA or in tests.

Math (one order k, one channel d, state h in R^N, t = 0..L-1 the steps of order k, p_t the
row-major position read at step t; every order k has its own delta, B, C, A, D, delta_bias):

    x_t  = delta_raw[p_t] + delta_bias          dt_t = softplus(x_t)
    a_t  = exp(dt_t * A)                        (N-vector)
    h_t  = a_t * h_{t-1} + dt_t * u[p_t] * B_t  (h_{-1} = 0)
    y_t  = <C_t, h_t> + D * u[p_t]              out[p_t] += y_t  (summed over the four orders)

(With delta_softplus=False, inference only, dt_t = x_t: the step sizes come finished, see `triton_delta`.)

Forward. One program per (batch, order, block of BLOCK_D channels) walks its order in tiles of TILE
steps. Each channel's state (N float32 values, whatever the input dtype) sits in the registers of N_LANES
threads (N / N_LANES values each), and the channels are spread over the other lanes and the warps, so the
recurrence along time runs inside each thread and the sum over the state needs at most log2(N_LANES)
shuffles; with N_LANES = 1 (large batches) it needs none. Small batches use N_LANES = 4 to occupy more
threads, and one image without gradients splits each order's steps over several programs
(`default_config`). In a tile, the steps h -> a_t h + b_t (b_t = dt_t u_t B_t, and b_0 += a_0 h_in for
the carried state) are composed by `tl.associative_scan` along time, which gives every h_t of the tile at
once; B_t and C_t, shared by all channels, are broadcast to every thread. Positions are index arithmetic
on t (reversed orders read s = L-1-t; column-major step s reads p = (s % H) * W + s // H): nothing is
transposed or flipped in memory, and each step's row of BLOCK_D channels is one contiguous load. The next
tile's inputs are loaded before the current tile is computed. When gradients are needed the state
entering every backward chunk (CHUNK steps, a multiple of TILE) is saved (float32, [Bt, 4, L/CHUNK, Dm,
N]: N/CHUNK times the size of a float32 delta). Without gradients the forward is one opaque torch
operator (`mambast::selective_scan_2d`), so torch.compile keeps it whole.

Backward (tiles of CHUNK steps; time in registers, the state across lanes). With g_t = dL/dh_t
(through all later steps) and gy_t = dL/dout[p_t]:

    g_t        = gy_t C_t + a_{t+1} g_{t+1}                      (g_L = 0: a reverse linear scan)
    dC_t       = sum_d gy_t h_t
    dB_t       = sum_d g_t dt_t u_t
    du[p_t]   += D gy_t + dt_t <g_t, B_t>                        (summed over the four orders)
    d dt_t     = <g_t, A a_t h_{t-1}> + u_t <g_t, B_t>,          a_t h_{t-1} = h_t - dt_t u_t B_t
    dA        += sum_{batch, t} g_t dt_t a_t h_{t-1}
    dD        += sum_{batch, t} gy_t u_t
    dx_t       = d dt_t sigmoid(x_t) = d delta_raw[p_t];         d delta_bias += sum_{batch, t} dx_t

A backward program walks its order's tiles last to first: it reloads the saved state entering the tile,
recomputes the tile's h_t with the forward scan, and runs the scan for g_t on the time-flipped tile with the
same decays a_t, each applied on the way from t to t - 1 (`_compose_carried`; the carry g and the first a of
the later tile enter at its last step), so no a_{t+1} is computed again. a_t h_{t-1} is taken as h_t - dt_t
u_t B_t, so h_{t-1} is never needed. Two kernels do this with the same maths (`ScanKernelConfig.lanes_bwd`):
`_scan_bwd_kernel_3d` on [steps, channels, states] tiles, and `_scan_bwd_kernel` in the forward's layout (time
and states in each thread's registers, both scans inside the thread; training at 256² crops, where it is
faster). Both flip the tile for the reverse scan rather than pass reverse=True to `tl.associative_scan`, whose
compiled result was wrong for this non-commutative combine (the CPU interpreter's was right).

Merging and reductions (determinism). The forward's out is two float32 [Bt, L, Dm] buffers: orders 0 and
1 add into the first, 2 and 3 into the second, with relaxed atomic adds, then the second is added to the
first in place. Two addends on a zero are exact in either order, so the forward is bitwise repeatable (a
still video scene gives identical frames); the price is a second output buffer while the scan runs and
one more element-wise kernel. du, dB and dC (backward only) are accumulated with relaxed atomic adds into
one buffer each: du receives four addends per element, dB and dC one per block of channels, so gradients
agree across runs to rounding in the last bits, not bitwise. dA, dD and d delta_bias are written as
per-(batch, order, channel) partial sums and reduced in torch (deterministic).
"""

from __future__ import annotations

import os
from dataclasses import astuple, dataclass

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

N_ORDERS = 4
LOG2E = 1.4426950408889634   # exp(x) = exp2(x log2(e)): the kernels take A log2(e)
LN2: tl.constexpr = tl.constexpr(0.6931471805599453)
LOG2E_C: tl.constexpr = tl.constexpr(LOG2E)
COMPILED = os.environ.get("TRITON_INTERPRET", "0") != "1"   # kernels compiled, not interpreted (as triton.jit decides)
FAST_MATH: tl.constexpr = tl.constexpr(COMPILED)
_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@dataclass(frozen=True)
class ScanKernelConfig:
    """Tile sizes and warps of the two kernels.

    Forward: tiles of `tile_fwd` steps x `block_d_fwd` channels, each channel's state shared by
    `lanes_fwd` threads (each holding tile_fwd x N / lanes_fwd float32 values per live tensor).
    Backward: tiles of `chunk` steps x `block_d_bwd` channels, either [steps, channels, states] tiles
    (`lanes_bwd` = 0) or the forward's layout with each channel's state over `lanes_bwd` lanes; `chunk` is
    also the interval between the states the forward saves for it, so it must be a multiple of tile_fwd.
    `segments_fwd` > 1 splits each order of an inference forward over that many programs (a summary launch,
    then the scan; ONE_IMAGE_CONFIG uses 8). `fma_decays_fwd` of each forward thread's
    next_power_of_2(N) / lanes_fwd states (padding included) compute their decays exp2(dt A) with a polynomial
    on the FMA units (`_exp2_fma`) instead of the special-function unit, whose throughput (an eighth of the FMA
    units') bounds the forward.
    `python benchmarks/scan.py --sweep` times alternatives.
    """

    chunk: int = 16         # backward time steps per tile and interval between saved states (power of two)
    tile_fwd: int = 8       # forward time steps per tile (power of two, <= chunk)
    block_d_fwd: int = 32   # channels per forward program (power of two)
    lanes_fwd: int = 1      # lanes sharing one channel's state in the forward (power of two, <= N)
    segments_fwd: int = 1   # programs splitting each order's steps in an inference forward (two launches if > 1)
    block_d_bwd: int = 16   # channels per backward program (power of two)
    lanes_bwd: int = 0      # 0: the 3-D backward kernel; else the forward's layout, this many lanes per channel's state
    warps_fwd: int = 1
    warps_bwd: int = 4
    fma_decays_fwd: int = 0  # of each thread's states, how many get their decay exp2(dt A) from FMAs (see above)

    def __post_init__(self):
        for name in ("chunk", "tile_fwd", "block_d_fwd", "lanes_fwd", "block_d_bwd", "warps_fwd", "warps_bwd"):
            v = getattr(self, name)
            if v < 1 or v & (v - 1):
                raise ValueError(f"ScanKernelConfig.{name} must be a power of two; got {v}")
        if self.lanes_bwd < 0 or self.lanes_bwd & (self.lanes_bwd - 1):
            raise ValueError(f"ScanKernelConfig.lanes_bwd must be 0 or a power of two; got {self.lanes_bwd}")
        if self.segments_fwd < 1:
            raise ValueError(f"ScanKernelConfig.segments_fwd must be >= 1; got {self.segments_fwd}")
        if self.fma_decays_fwd < 0:
            raise ValueError(f"ScanKernelConfig.fma_decays_fwd must be >= 0; got {self.fma_decays_fwd}")
        if self.tile_fwd > self.chunk:
            raise ValueError(f"ScanKernelConfig.tile_fwd ({self.tile_fwd}) must not exceed chunk ({self.chunk})")


DEFAULT_CONFIG = ScanKernelConfig()
# Few sequences (batch x 4 orders x channels) leave most of the GPU idle with one thread per channel: then
# four lanes share each channel's state. Both configurations were the fastest of a sweep on an H200
# (benchmarks/scan.py --sweep) at L = 4096, Dm = 1024, N = 16, batch 16 and batch 1 respectively, among
# tiles of at most 16 steps (one image without gradients now takes ONE_IMAGE_CONFIG below).
FEW_SEQUENCES_CONFIG = ScanKernelConfig(tile_fwd=16, block_d_fwd=32, lanes_fwd=4, warps_fwd=4)
FEW_SEQUENCES = 16384
# At most one image's sequences (batch 1 at Dm = 1024) and no gradients: a grid this small leaves most of the
# GPU idle and the latency of the walk along time bounds it, so each order is split over 8 programs (a summary
# launch, then the scan: about 1.9 times the work on 8 times the threads of one unsplit program per order). On
# an H200 at L = 4096: batch 1 0.254 ms against 0.303 for tiles of 32 steps over 4 lanes, the best unsplit
# one, but batch 2 0.494 vs 0.428 with FEW_SEQUENCES_CONFIG (docs/performance.md).
# Inference only (the states a backward needs are saved by one program per order).
ONE_IMAGE_CONFIG = ScanKernelConfig(tile_fwd=8, block_d_fwd=32, lanes_fwd=1, warps_fwd=1, segments_fwd=8)
ONE_IMAGE = 4096
# Given finished step sizes (inference from 16-bit step sizes) with many sequences: tiles of 4 steps and two
# channels per thread (251 registers, no spills, against DEFAULT_CONFIG's 255 and spills): at batch 16 on an
# H200 1.753 against 1.806 ms (docs/performance.md). One decay in 16 computed on the FMA units
# takes it to 1.689 ms; two, 1.726; four, 1.819 (docs/performance.md).
GIVEN_STEPS_CONFIG = ScanKernelConfig(tile_fwd=4, block_d_fwd=64, lanes_fwd=1, warps_fwd=1, fma_decays_fwd=1)


# Training (forward that saves states, then the backward) with many sequences: the backward in the forward's layout,
# tiles of 4 steps x 16 channels, each channel's 16 states over 4 lanes, one warp: the fastest at a training step's
# shapes (256² crops; docs/performance.md, "Training"). It saves a state every 4 steps, four times DEFAULT_CONFIG's
# memory, so it is taken only up to the length it was measured at; longer sequences keep DEFAULT_CONFIG.
TRAINING_CONFIG = ScanKernelConfig(chunk=4, tile_fwd=4, block_d_bwd=16, warps_bwd=1, lanes_bwd=4)
TRAINING_MAX_LENGTH = 1024


def default_config(batch: int, channels: int, grad: bool = False, given_steps: bool = False,
                   length: int | None = None) -> ScanKernelConfig:
    """The kernel configuration used when none is given, from the number of sequences to scan, whether the
    backward will run, whether the step sizes come finished (no softplus in the scan) and the sequence length."""
    sequences = batch * N_ORDERS * channels
    if sequences <= ONE_IMAGE and not grad:
        return ONE_IMAGE_CONFIG
    if sequences < FEW_SEQUENCES:
        return FEW_SEQUENCES_CONFIG
    if grad and (length is None or length <= TRAINING_MAX_LENGTH):
        return TRAINING_CONFIG
    return GIVEN_STEPS_CONFIG if given_steps else DEFAULT_CONFIG


# ----------------------------------------------------------------------------------------- kernels

@triton.jit
def _compose(a1, b1, a2, b2):
    # (h -> a2 (a1 h + b1) + b2): the affine maps of two consecutive steps, earlier one first
    return a1 * a2, b1 * a2 + b2


@triton.jit
def _compose_carried(q1, l1, s1, q2, l2, s2):
    # s_i = b_i + a_{i-1} s_{i-1}: each step's factor a applies on the way to the next step, so a run of steps
    # is (q: product of its factors but the last, l: the last factor, s: its value from a zero carry)
    ql = q2 * l1
    return q1 * ql, l2, s2 + ql * s1


@triton.jit
def _reverse_scan_g(a, gC):
    # g_t = gC_t + a_{t+1} g_{t+1} along axis 0, a_t being step t's decay (applied on the way from t to t - 1).
    # Not reverse=True (compiled, it gave wrong gradients; see the module docstring): flip, scan, flip back
    ra = tl.flip(a, 0)
    _, _, g = tl.associative_scan((tl.full(ra.shape, 1.0, tl.float32), ra, tl.flip(gC, 0)), 0, _compose_carried)
    return tl.flip(g, 0)


@triton.jit
def _softplus(x):
    # torch's softplus (threshold 20) with an accurate log1p(z) = log(1 + z) * z / ((1 + z) - 1). Compiled, it
    # uses the hardware's approximate log2 and division (relative error ~1e-7; the IEEE-exact versions take
    # three times the instructions, a fifth of the forward's); the CPU interpreter has only the exact ones.
    z = tl.exp2(tl.minimum(x, 20.0) * LOG2E_C)
    w = 1.0 + z
    if FAST_MATH:
        log1p = libdevice.fast_log2f(w) * LN2 * libdevice.fast_dividef(z, w - 1.0)
    else:
        log1p = tl.log2(w) * LN2 * (z / (w - 1.0))
    return tl.where(x > 20.0, x, tl.where(w == 1.0, z, log1p))


@triton.jit
def _exp2_fma(x):
    # 2^x on the FMA units instead of the special-function unit: x = j + f with j an integer (rounded by adding
    # 1.5 x 2^23) and |f| <= 1/2, 2^f = 1 + f q(f) with q of degree 4 (relative error 9.1e-8, 1.9e-7 evaluated
    # in float32; 2^0 = 1 exactly, so padded steps stay identities), j added to the exponent bits. x is clamped
    # to [-125, 128]: below, the result is 2^-125 instead of a smaller number or 0; from 128 up, +inf (as exp2).
    # NaN gives a number (which one depends on the hardware's min/max): a NaN step size still makes the scan's
    # state NaN, through dt u B (keeping NaN here, as exp2 does, took 16 more instructions per loop turn and 6
    # more registers in the sm_90 build of GIVEN_STEPS_CONFIG).
    x = tl.clamp(x, -125.0, 128.0)
    t = x + 12582912.0
    f = x - (t - 12582912.0)
    q = 0.001326472709942249 * f + 0.009671512646316787
    q = q * f + 0.05550733743584718
    q = q * f + 0.2402224208522987
    q = q * f + 0.6931469775989206
    p = q * f + 1.0
    bits = p.to(tl.int32, bitcast=True) + (t.to(tl.int32, bitcast=True) << 23)
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _steps(t0, k, L, H, W, CHUNK: tl.constexpr):
    """Steps t0 .. t0 + CHUNK - 1 of order k: (row-major positions read, 0 past the end; in-range mask)."""
    t = t0 + tl.arange(0, CHUNK)
    t_ok = t < L
    s = tl.where(k >= 2, L - 1 - t, t)       # orders 2, 3 read orders 0, 1 backwards
    col = (s % H) * W + s // H               # column-major step s = w * H + h reads h * W + w
    return tl.where(t_ok, tl.where(k % 2 == 1, col, s), 0), t_ok


@triton.jit
def _rows(base, p, s_row, cols, s_col, mask):
    """[T, len(cols)] float32 tile: row i at base + p[i] * s_row, columns cols (0 where masked)."""
    return tl.load(base + p[:, None] * s_row + cols[None, :] * s_col, mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _state_rows(base, p, s_row, nt, s_col, t_ok, nt_ok):
    """[T, NI, NL] float32 tile of B or C: row i at base + p[i] * s_row, state columns nt (0 where masked)."""
    return tl.load(base + p[:, None, None] * s_row + nt * s_col, mask=t_ok[:, None, None] & nt_ok,
                   other=0.0).to(tl.float32)


@triton.jit
def _lane_layout(d, Dm, N, NI: tl.constexpr, N_LANES: tl.constexpr):
    """Indices of the [.., NI, BD, NL] layout (state n = i * N_LANES + j): n3 [NI, 1, NL], d3 [1, BD, 1], their
    mask [NI, BD, NL], and the state index nt [1, NI, NL] of a B or C row with its mask."""
    n3 = tl.arange(0, NI)[:, None, None] * N_LANES + tl.arange(0, N_LANES)[None, None, :]
    d3 = d[None, :, None]
    nd_ok = (n3 < N) & (d3 < Dm)
    nt = tl.reshape(n3, (1, NI, N_LANES))
    return n3, d3, nd_ok, nt, nt < N


@triton.jit
def _bwd_bases(u_ptr, delta_ptr, B_ptr, C_ptr, gy_ptr, states_ptr, du_ptr, ddelta_ptr, dB_ptr, dC_ptr, b, k, L, Dm,
               N, n_chunks, d_offsets, n_offsets, su_b, sd_b, sd_k, sB_b, sB_k, sC_b, sC_k, sg_b):
    """A backward program's base pointers: inputs of batch b, order k; its saved states at d_offsets + n_offsets
    (d * N and n in the kernel's layout); du, ddelta, dB, dC contiguous."""
    return (u_ptr + b * su_b,
            delta_ptr + b * sd_b + k.to(tl.int64) * sd_k,    # 4 L Dm may pass 2^31 (one order's L Dm may not)
            B_ptr + b * sB_b + k * sB_k,
            C_ptr + b * sC_b + k * sC_k,
            gy_ptr + b * sg_b,
            states_ptr + ((b * 4 + k) * n_chunks) * Dm * N + d_offsets + n_offsets,
            du_ptr + b * L * Dm,                              # fp32 [Bt, L, Dm]
            ddelta_ptr + (b * 4 + k) * L * Dm,                # [Bt, 4, L, Dm]
            dB_ptr + (b * 4 + k) * L * N,                     # fp32 [Bt, 4, L, N]
            dC_ptr + (b * 4 + k) * L * N)


@triton.jit
def _bwd_channel_rows(c, live, k, L, H, W, u_base, dl_base, gy_base, d, d_ok, su_l, su_d, sd_l, sd_d, sg_l, sg_d,
                      CHUNK: tl.constexpr):
    """Backward tile c (all masked unless `live`): positions p, the mask of steps, and the [T, BD] rows of u, raw
    delta and gy."""
    p, t_ok = _steps(c * CHUNK, k, L, H, W, CHUNK)
    t_ok = t_ok & live
    u = _rows(u_base, p, su_l, d, su_d, t_ok[:, None] & d_ok[None, :])
    x = _rows(dl_base, p, sd_l, d, sd_d, t_ok[:, None] & d_ok[None, :])
    gy = _rows(gy_base, p, sg_l, d, sg_d, t_ok[:, None] & d_ok[None, :])
    return p, t_ok, u, x, gy


@triton.jit
def _scan_fwd_kernel(
    u_ptr, delta_ptr, A2_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, out_ptr, out2_ptr, states_ptr, seg_ptr,
    L, H, W, Dm, N, n_tiles, n_chunks,
    su_b, su_l, su_d,
    sd_b, sd_k, sd_l, sd_d,
    sB_b, sB_k, sB_l, sB_n,
    sC_b, sC_k, sC_l, sC_n,
    TILE: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, N_LANES: tl.constexpr,
    STORE_STATES: tl.constexpr, STATE_EVERY: tl.constexpr, SEGMENTS: tl.constexpr, SUMMARY: tl.constexpr,
    SOFTPLUS: tl.constexpr, FMA_DECAYS: tl.constexpr,
):
    # Tensors are [TILE, NI, BLOCK_D, N_LANES] with state index n = i * N_LANES + j: the last axis spreads
    # each channel's state over N_LANES lanes (more threads for small batches), the channels over the other
    # lanes and the warps; time and the NI = BLOCK_N / N_LANES other states sit in each thread's registers,
    # so the scan along time needs no exchange between threads and the sum over the state only
    # log2(N_LANES) shuffles. B_t and C_t, shared by all channels, are broadcast.
    # SEGMENTS > 1 splits each order into that many runs of tiles, scanned by separate programs (more
    # parallelism for small batches): a SUMMARY launch scans every segment but the last from a zero state
    # and stores [state leaving it, product of its decays = exp2(A2 x sum of its dt)] in seg_ptr
    # ([Bt, 4, SEGMENTS, 2, Dm, N]); the second launch starts segment s from the state composed of the
    # summaries of segments 0 .. s - 1.
    NI: tl.constexpr = BLOCK_N // N_LANES
    pid_d = tl.program_id(0)
    k = tl.program_id(1) // SEGMENTS
    seg = tl.program_id(1) % SEGMENTS
    b = tl.program_id(2).to(tl.int64)
    d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    rows = tl.arange(0, TILE)
    d_ok = d < Dm
    n3, d3, nd_ok, nt, nt_ok = _lane_layout(d, Dm, N, NI, N_LANES)

    A2 = tl.load(A2_ptr + (k * Dm + d3) * N + n3, mask=nd_ok, other=0.0)   # A log2(e) [NI, BD, NL]
    Dk = tl.load(D_ptr + k * Dm + d, mask=d_ok, other=0.0)                 # [BD]
    bias = tl.load(bias_ptr + k * Dm + d, mask=d_ok, other=0.0)            # [BD]

    u_base = u_ptr + b * su_b
    dl_base = delta_ptr + b * sd_b + k.to(tl.int64) * sd_k     # 4 L Dm may pass 2^31 (one order's L Dm may not)
    B_base = B_ptr + b * sB_b + k * sB_k
    C_base = C_ptr + b * sC_b + k * sC_k
    out_base = tl.where(k < 2, out_ptr, out2_ptr) + b * L * Dm   # orders 0, 1 and 2, 3: two addends each
    st_base = states_ptr + ((b * 4 + k) * n_chunks) * Dm * N + d3 * N + n3
    sg_base = seg_ptr + ((b * 4 + k) * SEGMENTS) * 2 * Dm * N + d3 * N + n3

    per_seg = tl.cdiv(n_tiles, SEGMENTS)
    c = seg * per_seg                                   # this program's tiles: c .. c_end - 1
    c_end = tl.minimum(c + per_seg, n_tiles)
    h = tl.zeros([NI, BLOCK_D, N_LANES], dtype=tl.float32)
    dt_sum = tl.zeros([BLOCK_D], dtype=tl.float32)   # sum of dt_t over the segment: its decay is exp2(A2 dt_sum)
    if SUMMARY:
        c_end = tl.where(seg == SEGMENTS - 1, c, c_end)   # nothing follows the last segment
    elif SEGMENTS > 1:
        j = 0
        while j < seg:                                  # the state entering segment seg
            h = (tl.load(sg_base + (2 * j + 1) * Dm * N, mask=nd_ok, other=1.0) * h
                 + tl.load(sg_base + 2 * j * Dm * N, mask=nd_ok, other=0.0))
            j += 1

    # tile c's inputs are loaded while tile c - 1 is computed, so their latency overlaps the scan
    p, t_ok = _steps(c * TILE, k, L, H, W, TILE)
    u = _rows(u_base, p, su_l, d, su_d, t_ok[:, None] & d_ok[None, :])                          # [T, BD]
    x = _rows(dl_base, p, sd_l, d, sd_d, t_ok[:, None] & d_ok[None, :])                         # [T, BD]
    Bt = _state_rows(B_base, p, sB_l, nt, sB_n, t_ok, nt_ok)                                   # [T, NI, NL]
    Ct = Bt if SUMMARY else _state_rows(C_base, p, sC_l, nt, sC_n, t_ok, nt_ok)              # summaries need no C
    while c < c_end:
        if STORE_STATES:  # the state entering every backward chunk (STATE_EVERY forward tiles)
            if c % STATE_EVERY == 0:
                tl.store(st_base + (c // STATE_EVERY) * Dm * N, h, mask=nd_ok)
        p_nx, t_ok_nx = _steps((c + 1) * TILE, k, L, H, W, TILE)   # past the end: all masked
        u_nx = _rows(u_base, p_nx, su_l, d, su_d, t_ok_nx[:, None] & d_ok[None, :])
        x_nx = _rows(dl_base, p_nx, sd_l, d, sd_d, t_ok_nx[:, None] & d_ok[None, :])
        B_nx = _state_rows(B_base, p_nx, sB_l, nt, sB_n, t_ok_nx, nt_ok)
        C_nx = B_nx if SUMMARY else _state_rows(C_base, p_nx, sC_l, nt, sC_n, t_ok_nx, nt_ok)

        td_ok = t_ok[:, None] & d_ok[None, :]
        if SOFTPLUS:
            dt = tl.where(td_ok, _softplus(x + bias[None, :]), 0.0)                             # [T, BD]
        else:
            dt = tl.where(td_ok, x + bias[None, :], 0.0)
        arg = dt[:, None, :, None] * A2[None, :, :, :]                                         # [T, NI, BD, NL]
        if FMA_DECAYS > 0:   # the first FMA_DECAYS of each thread's NI states: both sides are compiled per register,
            # and the select on a constant index leaves one of them
            a = tl.where((tl.arange(0, NI) < FMA_DECAYS)[None, :, None, None], _exp2_fma(arg), tl.exp2(arg))
        else:
            a = tl.exp2(arg)
        bx = (dt * u)[:, None, :, None] * Bt[:, :, None, :]
        bx = tl.where((rows == 0)[:, None, None, None], bx + a * h[None, :, :, :], bx)          # carry in
        _, hs = tl.associative_scan((a, bx), 0, _compose)                                       # h_t
        last = (rows == TILE - 1)[:, None, None, None]
        if SUMMARY:
            dt_sum += tl.sum(dt, axis=0)
        else:
            y = tl.sum(tl.sum(hs * Ct[:, :, None, :], axis=1), axis=2) + Dk[None, :] * u       # [T, BD]
            tl.atomic_add(out_base + p[:, None] * Dm + d[None, :], y, mask=td_ok, sem="relaxed")
        # padded rows are identity steps (dt = 0), so the last row holds the state leaving the tile
        h = tl.sum(tl.where(last, hs, 0.0), axis=0)

        p, t_ok, u, x, Bt, Ct = p_nx, t_ok_nx, u_nx, x_nx, B_nx, C_nx
        c += 1
    if SUMMARY:
        tl.store(sg_base + 2 * seg * Dm * N, h, mask=nd_ok)
        tl.store(sg_base + (2 * seg + 1) * Dm * N, tl.exp2(dt_sum[None, :, None] * A2), mask=nd_ok)


@triton.jit
def _scan_bwd_kernel(
    u_ptr, delta_ptr, A2_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, states_ptr, gy_ptr,
    du_ptr, ddelta_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr, dbias_ptr,
    L, H, W, Dm, N, n_chunks,
    su_b, su_l, su_d,
    sd_b, sd_k, sd_l, sd_d,
    sB_b, sB_k, sB_l, sB_n,
    sC_b, sC_k, sC_l, sC_n,
    sg_b, sg_l, sg_d,
    CHUNK: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, N_LANES: tl.constexpr,
):
    # The forward's layout: tensors are [CHUNK, NI, BLOCK_D, N_LANES] with state index n = i * N_LANES + j, so
    # time and NI = BLOCK_N / N_LANES states sit in each thread's registers, both scans along time run inside
    # each thread, and sums over the state take log2(N_LANES) shuffles. B_t and C_t are broadcast.
    NI: tl.constexpr = BLOCK_N // N_LANES
    pid_d = tl.program_id(0)
    k = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    rows = tl.arange(0, CHUNK)
    d_ok = d < Dm
    n3, d3, nd_ok, nt, nt_ok = _lane_layout(d, Dm, N, NI, N_LANES)
    first = (rows == 0)[:, None, None, None]
    last = (rows == CHUNK - 1)[:, None, None, None]

    A2 = tl.load(A2_ptr + (k * Dm + d3) * N + n3, mask=nd_ok, other=0.0)   # A log2(e) [NI, BD, NL]
    Dk = tl.load(D_ptr + k * Dm + d, mask=d_ok, other=0.0)
    bias = tl.load(bias_ptr + k * Dm + d, mask=d_ok, other=0.0)

    u_base, dl_base, B_base, C_base, gy_base, st_base, du_base, ddl_base, dB_base, dC_base = _bwd_bases(
        u_ptr, delta_ptr, B_ptr, C_ptr, gy_ptr, states_ptr, du_ptr, ddelta_ptr, dB_ptr, dC_ptr, b, k, L, Dm, N,
        n_chunks, d3 * N, n3, su_b, sd_b, sd_k, sB_b, sB_k, sC_b, sC_k, sg_b)

    # tiles are visited last to first; tile c's inputs are loaded while tile c + 1 is computed
    c = n_chunks - 1
    p, t_ok, u, x, gy = _bwd_channel_rows(c, True, k, L, H, W, u_base, dl_base, gy_base, d, d_ok,
                                          su_l, su_d, sd_l, sd_d, sg_l, sg_d, CHUNK)
    Bt = _state_rows(B_base, p, sB_l, nt, sB_n, t_ok, nt_ok)                            # [T, NI, NL]
    Ct = _state_rows(C_base, p, sC_l, nt, sC_n, t_ok, nt_ok)                            # [T, NI, NL]
    h_in = tl.load(st_base + c * Dm * N, mask=nd_ok, other=0.0)                         # [NI, BD, NL]
    g_next = tl.zeros([NI, BLOCK_D, N_LANES], dtype=tl.float32)   # g at the step after the tile
    a_next = tl.zeros([NI, BLOCK_D, N_LANES], dtype=tl.float32)   # a at the step after the tile
    dA_acc = tl.zeros([NI, BLOCK_D, N_LANES], dtype=tl.float32)
    dD_acc = tl.zeros([CHUNK, BLOCK_D], dtype=tl.float32)     # summed over rows after the loop
    dbias_acc = tl.zeros([CHUNK, BLOCK_D], dtype=tl.float32)
    while c >= 0:
        more = c > 0                                                  # is there a tile c - 1?
        p_nx, t_ok_nx, u_nx, x_nx, gy_nx = _bwd_channel_rows(
            c - 1, more, k, L, H, W, u_base, dl_base, gy_base, d, d_ok, su_l, su_d, sd_l, sd_d, sg_l, sg_d, CHUNK)
        B_nx = _state_rows(B_base, p_nx, sB_l, nt, sB_n, t_ok_nx, nt_ok)
        C_nx = _state_rows(C_base, p_nx, sC_l, nt, sC_n, t_ok_nx, nt_ok)
        h_in_nx = tl.load(st_base + (c - 1) * Dm * N, mask=nd_ok & more, other=0.0)

        # recompute h_t from the saved state entering the tile
        td_ok = t_ok[:, None] & d_ok[None, :]
        tn_ok = t_ok[:, None, None] & nt_ok
        x = x + bias[None, :]
        dt = tl.where(td_ok, _softplus(x), 0.0)                                             # [T, BD]
        dtu = dt * u
        a = tl.exp2(dt[:, None, :, None] * A2[None, :, :, :])                               # [T, NI, BD, NL]
        bx = dtu[:, None, :, None] * Bt[:, :, None, :]
        _, hs = tl.associative_scan((a, tl.where(first, bx + a * h_in[None, :, :, :], bx)), 0, _compose)
        dC = tl.sum(hs * gy[:, None, :, None], axis=2)                                      # [T, NI, NL]
        tl.atomic_add(dC_base + p[:, None, None] * N + nt, dC, mask=tn_ok, sem="relaxed")
        ah = hs - bx                                                                        # a_t h_{t-1}

        # g_t = gy_t C_t + a_{t+1} g_{t+1}: a reverse scan with the carry from the later tile entering at the
        # last row (a_next: that tile's a at its first row; anything multiplies g_L = 0). Each a_t applies on
        # the way from t to t - 1, so the tile's own decays serve and no a_{t+1} is computed
        gC = gy[:, None, :, None] * Ct[:, :, None, :]
        gC = tl.where(last, gC + a_next[None, :, :, :] * g_next[None, :, :, :], gC)
        g = _reverse_scan_g(a, gC)                                                          # g_t
        g_next = tl.sum(tl.where(first, g, 0.0), axis=0)
        a_next = tl.sum(tl.where(first, a, 0.0), axis=0)

        gB = tl.sum(tl.sum(g * Bt[:, :, None, :], axis=1), axis=2)                         # <g_t, B_t> [T, BD]
        dB = tl.sum(g * dtu[:, None, :, None], axis=2)                                      # [T, NI, NL]
        tl.atomic_add(dB_base + p[:, None, None] * N + nt, dB, mask=tn_ok, sem="relaxed")
        gah = g * ah                                                                        # g_t a_t h_{t-1}
        ddt = tl.sum(tl.sum(gah * A2[None, :, :, :], axis=1), axis=2) * LN2 + u * gB       # [T, BD]
        dx = tl.where(td_ok, ddt * (1.0 / (1.0 + tl.exp(-x))), 0.0)                         # through softplus
        tl.store(ddl_base + p[:, None] * Dm + d[None, :], dx.to(ddelta_ptr.dtype.element_ty), mask=td_ok)
        du = Dk[None, :] * gy + dt * gB                                                     # [T, BD]
        tl.atomic_add(du_base + p[:, None] * Dm + d[None, :], du, mask=td_ok, sem="relaxed")
        dA_acc += tl.sum(gah * dt[:, None, :, None], axis=0)
        dD_acc += gy * u
        dbias_acc += dx

        p, t_ok, u, x, gy, Bt, Ct = p_nx, t_ok_nx, u_nx, x_nx, gy_nx, B_nx, C_nx
        h_in = h_in_nx
        c -= 1

    part = (b * 4 + k) * Dm                              # partials [Bt, 4, Dm(, N)], summed in torch
    tl.store(dA_ptr + (part + d3) * N + n3, dA_acc, mask=nd_ok)
    tl.store(dD_ptr + part + d, tl.sum(dD_acc, axis=0), mask=d_ok)
    tl.store(dbias_ptr + part + d, tl.sum(dbias_acc, axis=0), mask=d_ok)


@triton.jit
def _scan_bwd_kernel_3d(
    u_ptr, delta_ptr, A2_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, states_ptr, gy_ptr,
    du_ptr, ddelta_ptr, dB_ptr, dC_ptr, dA_ptr, dD_ptr, dbias_ptr,
    L, H, W, Dm, N, n_chunks,
    su_b, su_l, su_d,
    sd_b, sd_k, sd_l, sd_d,
    sB_b, sB_k, sB_l, sB_n,
    sC_b, sC_k, sC_l, sC_n,
    sg_b, sg_l, sg_d,
    CHUNK: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_d = tl.program_id(0)
    k = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    n = tl.arange(0, BLOCK_N)
    rows = tl.arange(0, CHUNK)
    d_ok = d < Dm
    n_ok = n < N
    dn_ok = d_ok[:, None] & n_ok[None, :]

    A2 = tl.load(A2_ptr + (k * Dm + d[:, None]) * N + n[None, :], mask=dn_ok, other=0.0)  # A log2(e) [BD, BN]
    Dk = tl.load(D_ptr + k * Dm + d, mask=d_ok, other=0.0)
    bias = tl.load(bias_ptr + k * Dm + d, mask=d_ok, other=0.0)

    u_base, dl_base, B_base, C_base, gy_base, st_base, du_base, ddl_base, dB_base, dC_base = _bwd_bases(
        u_ptr, delta_ptr, B_ptr, C_ptr, gy_ptr, states_ptr, du_ptr, ddelta_ptr, dB_ptr, dC_ptr, b, k, L, Dm, N,
        n_chunks, d[:, None] * N, n[None, :], su_b, sd_b, sd_k, sB_b, sB_k, sC_b, sC_k, sg_b)

    # tiles are visited last to first; tile c's inputs are loaded while tile c + 1 is computed
    c = n_chunks - 1
    p, t_ok, u, x, gy = _bwd_channel_rows(c, True, k, L, H, W, u_base, dl_base, gy_base, d, d_ok,
                                          su_l, su_d, sd_l, sd_d, sg_l, sg_d, CHUNK)
    Bt = _rows(B_base, p, sB_l, n, sB_n, t_ok[:, None] & n_ok[None, :])                 # [T, BN]
    Ct = _rows(C_base, p, sC_l, n, sC_n, t_ok[:, None] & n_ok[None, :])                 # [T, BN]
    h_in = tl.load(st_base + c * Dm * N, mask=dn_ok, other=0.0)                         # [BD, BN]
    g_next = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)   # g at the step after the tile
    a_next = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)   # a at the step after the tile
    dA_acc = tl.zeros([BLOCK_D, BLOCK_N], dtype=tl.float32)
    dD_acc = tl.zeros([CHUNK, BLOCK_D], dtype=tl.float32)     # summed over rows after the loop
    dbias_acc = tl.zeros([CHUNK, BLOCK_D], dtype=tl.float32)
    while c >= 0:
        more = c > 0                                                  # is there a tile c - 1?
        p_nx, t_ok_nx, u_nx, x_nx, gy_nx = _bwd_channel_rows(
            c - 1, more, k, L, H, W, u_base, dl_base, gy_base, d, d_ok, su_l, su_d, sd_l, sd_d, sg_l, sg_d, CHUNK)
        B_nx = _rows(B_base, p_nx, sB_l, n, sB_n, t_ok_nx[:, None] & n_ok[None, :])
        C_nx = _rows(C_base, p_nx, sC_l, n, sC_n, t_ok_nx[:, None] & n_ok[None, :])
        h_in_nx = tl.load(st_base + (c - 1) * Dm * N, mask=dn_ok & more, other=0.0)

        # recompute h_t from the saved state entering the tile
        td_ok = t_ok[:, None] & d_ok[None, :]
        tn_ok = t_ok[:, None] & n_ok[None, :]
        x = x + bias[None, :]
        dt = tl.where(td_ok, _softplus(x), 0.0)                                             # [T, BD]
        dtu = dt * u
        a = tl.exp2(dt[:, :, None] * A2[None, :, :])                                        # [T, BD, BN]
        bx = dtu[:, :, None] * Bt[:, None, :]
        _, hs = tl.associative_scan((a, tl.where((rows == 0)[:, None, None], bx + a * h_in[None, :, :], bx)),
                                    0, _compose)                                            # h_t
        dC = tl.sum(hs * gy[:, :, None], axis=1)                                           # [T, BN]
        tl.atomic_add(dC_base + p[:, None] * N + n[None, :], dC, mask=tn_ok, sem="relaxed")
        ah = hs - bx                                                                        # a_t h_{t-1}

        # g_t = gy_t C_t + a_{t+1} g_{t+1}, as in _scan_bwd_kernel
        gC = gy[:, :, None] * Ct[:, None, :]
        gC = tl.where((rows == CHUNK - 1)[:, None, None], gC + a_next[None, :, :] * g_next[None, :, :], gC)
        g = _reverse_scan_g(a, gC)                                                          # g_t [T, BD, BN]
        g_next = tl.sum(tl.where((rows == 0)[:, None, None], g, 0.0), axis=0)
        a_next = tl.sum(tl.where((rows == 0)[:, None, None], a, 0.0), axis=0)

        gB = tl.sum(g * Bt[:, None, :], axis=2)                                            # <g_t, B_t> [T, BD]
        dB = tl.sum(g * dtu[:, :, None], axis=1)                                           # [T, BN]
        tl.atomic_add(dB_base + p[:, None] * N + n[None, :], dB, mask=tn_ok, sem="relaxed")
        gah = g * ah                                                                        # g_t a_t h_{t-1}
        ddt = tl.sum(gah * A2[None, :, :], axis=2) * LN2 + u * gB                          # [T, BD]
        dx = tl.where(td_ok, ddt * (1.0 / (1.0 + tl.exp(-x))), 0.0)                         # through softplus
        tl.store(ddl_base + p[:, None] * Dm + d[None, :], dx.to(ddelta_ptr.dtype.element_ty), mask=td_ok)
        du = Dk[None, :] * gy + dt * gB                                                     # [T, BD]
        tl.atomic_add(du_base + p[:, None] * Dm + d[None, :], du, mask=td_ok, sem="relaxed")
        dA_acc += tl.sum(gah * dt[:, :, None], axis=0)
        dD_acc += gy * u
        dbias_acc += dx

        p, t_ok, u, x, gy, Bt, Ct = p_nx, t_ok_nx, u_nx, x_nx, gy_nx, B_nx, C_nx
        h_in = h_in_nx
        c -= 1

    part = (b * 4 + k) * Dm                              # partials [Bt, 4, Dm(, N)], summed in torch
    tl.store(dA_ptr + (part + d[:, None]) * N + n[None, :], dA_acc, mask=dn_ok)
    tl.store(dD_ptr + part + d, tl.sum(dD_acc, axis=0), mask=d_ok)
    tl.store(dbias_ptr + part + d, tl.sum(dbias_acc, axis=0), mask=d_ok)


# ---------------------------------------------------------------------------------------- autograd

def _states_shape(delta, A2, cfg) -> tuple:
    """[Bt, 4, chunks, Dm, N]: the states the training forward saves for the backward (real and fake operator)."""
    Bt, _, L, Dm = delta.shape
    return (Bt, N_ORDERS, triton.cdiv(L, cfg.chunk), Dm, A2.shape[-1])


def _launch_fwd(u, delta, A2, B, C, D, bias, H, W, cfg, store_states, softplus=True, **launch):
    """out [Bt, L, Dm] float32 (bitwise repeatable) and the states entering each backward chunk (a placeholder
    unless store_states).
    softplus: dt = softplus(delta + bias), else delta + bias. launch: extra Triton launch options (e.g. maxnreg,
    for experiments)."""
    Bt, _, L, Dm = delta.shape
    N = A2.shape[-1]
    n_chunks = triton.cdiv(L, cfg.chunk)
    segments = 1 if store_states else cfg.segments_fwd    # the saved states need one program per order
    out, out2 = (torch.zeros(Bt, L, Dm, device=u.device, dtype=torch.float32) for _ in range(2))  # two orders each
    states = torch.empty(_states_shape(delta, A2, cfg) if store_states else (1,), device=u.device,
                         dtype=torch.float32)
    summaries = torch.empty((Bt, N_ORDERS, segments, 2, Dm, N) if segments > 1 else (1,), device=u.device,
                            dtype=torch.float32)
    grid = (triton.cdiv(Dm, cfg.block_d_fwd), N_ORDERS * segments, Bt)
    block_n = triton.next_power_of_2(N)
    lanes = min(cfg.lanes_fwd, block_n)
    for summary in (True, False) if segments > 1 else (False,):
        _scan_fwd_kernel[grid](
            u, delta, A2, B, C, D, bias, out, out2, states, summaries,
            L, H, W, Dm, N, triton.cdiv(L, cfg.tile_fwd), n_chunks,
            *u.stride(), *delta.stride(), *B.stride(), *C.stride(),
            TILE=cfg.tile_fwd, BLOCK_D=cfg.block_d_fwd, BLOCK_N=block_n, N_LANES=lanes,
            STORE_STATES=store_states, STATE_EVERY=cfg.chunk // cfg.tile_fwd, SEGMENTS=segments,
            SUMMARY=summary, SOFTPLUS=softplus, FMA_DECAYS=min(cfg.fma_decays_fwd, block_n // lanes),
            num_warps=cfg.warps_fwd, **launch,
        )
    return out.add_(out2), states


def _launch_bwd(u, delta, A2, B, C, D, bias, states, gy, H, W, cfg):
    """Gradients (du, ddelta, dB, dC float32 except ddelta in delta's dtype; dA, dD, d delta_bias summed)."""
    Bt, _, L, Dm = delta.shape
    N = A2.shape[-1]
    n_chunks = triton.cdiv(L, cfg.chunk)
    dev, f32 = u.device, torch.float32
    du = torch.zeros(Bt, L, Dm, device=dev, dtype=f32)
    ddelta = torch.empty(Bt, N_ORDERS, L, Dm, device=dev, dtype=delta.dtype)
    dB = torch.zeros(Bt, N_ORDERS, L, N, device=dev, dtype=f32)
    dC = torch.zeros(Bt, N_ORDERS, L, N, device=dev, dtype=f32)
    dA = torch.empty(Bt, N_ORDERS, Dm, N, device=dev, dtype=f32)
    dD = torch.empty(Bt, N_ORDERS, Dm, device=dev, dtype=f32)
    dbias = torch.empty(Bt, N_ORDERS, Dm, device=dev, dtype=f32)
    grid = (triton.cdiv(Dm, cfg.block_d_bwd), N_ORDERS, Bt)
    block_n = triton.next_power_of_2(N)
    extra = {} if cfg.lanes_bwd == 0 else {"N_LANES": min(cfg.lanes_bwd, block_n)}
    (_scan_bwd_kernel_3d if cfg.lanes_bwd == 0 else _scan_bwd_kernel)[grid](
        u, delta, A2, B, C, D, bias, states, gy,
        du, ddelta, dB, dC, dA, dD, dbias,
        L, H, W, Dm, N, n_chunks,
        *u.stride(), *delta.stride(), *B.stride(), *C.stride(), *gy.stride(),
        CHUNK=cfg.chunk, BLOCK_D=cfg.block_d_bwd, BLOCK_N=block_n,
        num_warps=cfg.warps_bwd, **extra,
    )
    return du, ddelta, dB, dC, dA.sum(0), dD.sum(0), dbias.sum(0)


# The training forward and backward are opaque operators too. Traced into a compiled graph (torch 2.11), the kernels'
# saved states were not kept for the backward and dB and dC were lost, which silently cut the style encoder off
# its gradients.
@torch.library.custom_op("mambast::selective_scan_2d_fwd", mutates_args=())
def _scan_fwd_op(u: torch.Tensor, delta: torch.Tensor, A2: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                 D32: torch.Tensor, bias32: torch.Tensor, H: int, W: int,
                 config: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """out and the saved states (float32, [Bt, 4, chunks, Dm, N])."""
    A2, D32, bias32 = A2.contiguous(), D32.contiguous(), bias32.contiguous()   # the kernels assume these layouts
    return _launch_fwd(u, delta, A2, B, C, D32, bias32, H, W, ScanKernelConfig(*config), True)


@_scan_fwd_op.register_fake
def _(u, delta, A2, B, C, D32, bias32, H, W, config):
    f32 = torch.float32
    return u.new_empty(u.shape, dtype=f32), u.new_empty(_states_shape(delta, A2, ScanKernelConfig(*config)), dtype=f32)


@torch.library.custom_op("mambast::selective_scan_2d_bwd", mutates_args=())
def _scan_bwd_op(u: torch.Tensor, delta: torch.Tensor, A2: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                 D32: torch.Tensor, bias32: torch.Tensor, states: torch.Tensor, gy: torch.Tensor, H: int, W: int,
                 config: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                             torch.Tensor, torch.Tensor]:
    """du, ddelta, dB, dC, dA, dD, d delta_bias (see _launch_bwd)."""
    A2, D32, bias32, states = A2.contiguous(), D32.contiguous(), bias32.contiguous(), states.contiguous()
    return _launch_bwd(u, delta, A2, B, C, D32, bias32, states, gy, H, W, ScanKernelConfig(*config))


@_scan_bwd_op.register_fake
def _(u, delta, A2, B, C, D32, bias32, states, gy, H, W, config):
    Bt, _, L, Dm = delta.shape
    N, f32 = A2.shape[-1], torch.float32
    return (u.new_empty((Bt, L, Dm), dtype=f32), delta.new_empty(delta.shape), u.new_empty(B.shape, dtype=f32),
            u.new_empty(C.shape, dtype=f32), u.new_empty((N_ORDERS, Dm, N), dtype=f32),
            u.new_empty((N_ORDERS, Dm), dtype=f32), u.new_empty((N_ORDERS, Dm), dtype=f32))


class _SelectiveScan2D(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, delta_bias, H, W, cfg):
        A2, D32, bias32 = _inputs32(A, D, delta_bias)
        config = list(astuple(cfg))
        out, states = _scan_fwd_op(u, delta, A2, B, C, D32, bias32, H, W, config)
        ctx.save_for_backward(u, delta, A2, B, C, D32, bias32, states)
        ctx.H, ctx.W, ctx.config = H, W, config
        ctx.dtypes = tuple(t.dtype for t in (u, delta, A, B, C, D, delta_bias))
        return out

    @staticmethod
    def backward(ctx, gy):
        u, delta, A2, B, C, D32, bias32, states = ctx.saved_tensors
        du, ddelta, dB, dC, dA, dD, dbias = _scan_bwd_op(u, delta, A2, B, C, D32, bias32, states, gy,
                                                         ctx.H, ctx.W, ctx.config)
        grads = tuple(g.to(dt) if need else None for g, dt, need in
                      zip((du, ddelta, dA, dB, dC, dD, dbias), ctx.dtypes, ctx.needs_input_grad))
        return (*grads, None, None, None)


def _inputs32(A, D, delta_bias):
    """A log2(e) (exp(dt A) = exp2(dt A2)), D and delta_bias as contiguous float32 [4, Dm(, N)]."""
    return (A.float() * LOG2E).contiguous(), D.float().contiguous(), delta_bias.float().contiguous()


@torch.library.custom_op("mambast::selective_scan_2d", mutates_args=())
def _scan_no_grad(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                  D: torch.Tensor, delta_bias: torch.Tensor, H: int, W: int, config: list[int],
                  softplus: bool) -> torch.Tensor:
    """The forward without autograd, as one opaque operator: torch.compile keeps it whole in its graphs."""
    A2, D32, bias32 = _inputs32(A, D, delta_bias)
    out, _ = _launch_fwd(u, delta, A2, B, C, D32, bias32, H, W, ScanKernelConfig(*config), False, softplus)
    return out


@_scan_no_grad.register_fake
def _(u, delta, A, B, C, D, delta_bias, H, W, config, softplus):
    return u.new_empty(u.shape, dtype=torch.float32)


def _check(u, delta, A, B, C, D, delta_bias, H, W):
    if delta.dim() != 4 or delta.shape[1] != N_ORDERS:
        raise ValueError(f"delta must be [Bt, 4, L, Dm]; got {tuple(delta.shape)}")
    Bt, _, L, Dm = delta.shape
    if H < 1 or W < 1 or H * W != L:
        raise ValueError(f"H, W must be positive with H * W == L = {L}; got H={H}, W={W}")
    if L * Dm >= 2 ** 31:
        raise ValueError(f"{H} x {W} tokens x {Dm} channels is too large for the Triton scan (positions x channels "
                         f"must stay below 2^31)")
    if A.dim() != 3 or A.shape[:2] != (N_ORDERS, Dm):
        raise ValueError(f"A must be [4, Dm={Dm}, N]; got {tuple(A.shape)}")
    N = A.shape[2]
    expected = {"u": (u, (Bt, L, Dm)), "B": (B, (Bt, N_ORDERS, L, N)), "C": (C, (Bt, N_ORDERS, L, N)),
                "D": (D, (N_ORDERS, Dm)), "delta_bias": (delta_bias, (N_ORDERS, Dm))}
    for name, (t, shape) in expected.items():
        if tuple(t.shape) != shape:
            raise ValueError(f"{name} must have shape {shape}; got {tuple(t.shape)}")
    for name, t in zip(("u", "delta", "A", "B", "C", "D", "delta_bias"), (u, delta, A, B, C, D, delta_bias)):
        if t.dtype not in _DTYPES:
            raise TypeError(f"{name} must be float32, bfloat16 or float16; got {t.dtype}")
        if t.device != u.device:
            raise ValueError(f"{name} is on {t.device} but u is on {u.device}")


def selective_scan_2d_triton(u, delta, A, B, C, D, delta_bias, H: int, W: int, *,
                             config: ScanKernelConfig | None = None, delta_softplus: bool = True):
    """Four-direction selective scan, fused in Triton; same arguments and result as `selective_scan_2d_ref`.

    u: [Bt, L, Dm]; delta: [Bt, 4, L, Dm] raw; A: [4, Dm, N]; B, C: [Bt, 4, L, N]; D, delta_bias: [4, Dm];
    L = H * W. Inputs may be float32, bfloat16 or float16 (the state is always float32) and any
    strides; any N works (padded to a power of two; tuned for N <= 16). Returns [Bt, L, Dm] float32
    and supports autograd for every tensor argument (gradients in the arguments' dtypes).
    config: tile sizes (default: `default_config(Bt, Dm, grad, not delta_softplus)`); the result does not depend on
    it beyond rounding.
    delta_softplus=False (inference only): delta holds the step sizes, dt = delta + delta_bias with no softplus
    (`ops.selective_scan_2d_proj` computes them with the softplus in the projection's kernel).
    """
    _check(u, delta, A, B, C, D, delta_bias, H, W)
    tensors = (u, delta, A, B, C, D, delta_bias)
    store = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)   # save states for backward
    config = config or default_config(u.shape[0], u.shape[2], store, not delta_softplus, length=u.shape[1])
    if store:
        if not delta_softplus:
            raise ValueError("delta_softplus=False has no backward: call it without gradients")
        return _SelectiveScan2D.apply(*tensors, int(H), int(W), config)
    return _scan_no_grad(*tensors, int(H), int(W), list(astuple(config)), bool(delta_softplus))
