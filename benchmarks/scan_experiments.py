"""Experiments behind the notes on speed and memory (CUDA machine, repository root). Measurements only.

    python benchmarks/scan_experiments.py variants    # what limits the forward: variants of the kernel
    python benchmarks/scan_experiments.py registers   # ptxas register caps (maxnreg) per tile configuration
    python benchmarks/scan_experiments.py graphs      # 512² batch 16 bf16: compiled calls launched vs graphed
    python benchmarks/scan_experiments.py streams     # 512² bf16 compiled, graphed: the two encoders serial vs
                                                      # on two streams, batch 1, 2, 4 (time and memory)
    python benchmarks/scan_experiments.py memory      # 512² batch 1 bf16 compiled: peak memory of each part
    python benchmarks/scan_experiments.py tiles       # batch 1 and 2: tile configurations, longer tiles and
                                                      # the state over more lanes (the first row is
                                                      # FEW_SEQUENCES_CONFIG, the second the former
                                                      # one-image tiles)
    python benchmarks/scan_experiments.py delta       # 512²: the step sizes' projection, cuBLAS vs Triton with
                                                      # softplus; the scan with B, C in bf16 and float32
    python benchmarks/scan_experiments.py given       # batch 16, step sizes given (the inference path): tile
                                                      # configurations, with several channels per thread
    python benchmarks/scan_experiments.py poly        # batch 16, step sizes given: 0-8 of each thread's 16 decays
                                                      # exp2(dt A) on the FMA units instead of the SFU
    python benchmarks/scan_experiments.py segments    # batch 1 and 2: each order split over 1-32 programs
                                                      # (1: unsplit; else summary launch + scan) for
                                                      # several tile shapes

`variants` rewrites the kernel's source (atomic adds -> plain stores; exp2 -> 1 + x; B and C loads ->
constants), so those variants compute wrong results: they only show how much each part costs. For the
hardware's view (registers, warps per scheduler, issue rate, stall reasons), Nsight Compute on one call:

    ncu -k regex:_scan_fwd -c 1 --section SchedulerStats --section Occupancy \\
        --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active.ratio" \\
        python benchmarks/scan_experiments.py one 16 [fma_decays]
"""

from __future__ import annotations

import dataclasses
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
for p in (REPO, REPO / "benchmarks"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import scan as bench  # noqa: E402

bench.DEVICE = "cuda"
SIDE, DM, N = 64, 1024, 16          # L = 4096 tokens (512² at patch 8), model width


def _inputs(bt):
    from mambast.ops import triton_scan as ts
    xs = bench.make_inputs(bt, DM, N, SIDE, SIDE, torch.bfloat16)
    u, delta, A, B, C, D, bias = xs
    A2, D32, b32 = ts._inputs32(A, D, bias)
    return xs, (u, delta, A2, B, C, D32, b32)


def _ms(f):
    import triton.testing
    f()
    return triton.testing.do_bench(f, warmup=20, rep=300, return_mode="median")


VARIANTS = {
    "as is": [],
    "stores instead of atomic adds": [
        ('tl.atomic_add(out_base + p[:, None] * Dm + d[None, :], y, mask=td_ok, sem="relaxed")',
         'tl.store(out_base + p[:, None] * Dm + d[None, :], y, mask=td_ok)')],
    "dt given (no softplus)": [('dt = tl.where(td_ok, _softplus(x + bias[None, :]), 0.0)',
                                'dt = tl.where(td_ok, tl.abs(x + bias[None, :]), 0.0)')],
    "no exp2": [('a = tl.exp2(arg)', 'a = 1.0 + arg')],   # (configurations without FMA decays)
    "no B, C loads": [
        ('Bt = _state_rows(B_base, p, sB_l, nt, sB_n, t_ok, nt_ok)', 'Bt = tl.zeros([TILE, NI, N_LANES], tl.float32) + 0.5'),
        ('Ct = Bt if SUMMARY else _state_rows(C_base, p, sC_l, nt, sC_n, t_ok, nt_ok)',
         'Ct = tl.zeros([TILE, NI, N_LANES], tl.float32) + 0.25'),
        ('B_nx = _state_rows(B_base, p_nx, sB_l, nt, sB_n, t_ok_nx, nt_ok)', 'B_nx = Bt * 1.01'),
        ('C_nx = B_nx if SUMMARY else _state_rows(C_base, p_nx, sC_l, nt, sC_n, t_ok_nx, nt_ok)', 'C_nx = Ct * 0.99')],
}
# computing the same results: where the registers go (B and C tiles are broadcast to every thread)
_BC_NATIVE = [  # B, C tiles kept in the input dtype until used (half the registers for bf16)
    ("                   other=0.0).to(tl.float32)", "                   other=0.0)"),
    ("bx = (dt * u)[:, None, :, None] * Bt[:, :, None, :]",
     "bx = (dt * u)[:, None, :, None] * Bt.to(tl.float32)[:, :, None, :]"),
    ("tl.sum(hs * Ct[:, :, None, :], axis=1)", "tl.sum(hs * Ct.to(tl.float32)[:, :, None, :], axis=1)")]
_BC_NO_PREFETCH = [  # B, C of a tile loaded at the start of its turn instead of one turn ahead
    ("B_nx = _state_rows(B_base, p_nx, sB_l, nt, sB_n, t_ok_nx, nt_ok)", "B_nx = Bt"),
    ("C_nx = B_nx if SUMMARY else _state_rows(C_base, p_nx, sC_l, nt, sC_n, t_ok_nx, nt_ok)", "C_nx = Ct"),
    ("        td_ok = t_ok[:, None] & d_ok[None, :]\n        dt = tl.where(td_ok, _softplus(",
     "        td_ok = t_ok[:, None] & d_ok[None, :]\n"
     "        Bt = _state_rows(B_base, p, sB_l, nt, sB_n, t_ok, nt_ok)\n"
     "        Ct = Bt if SUMMARY else _state_rows(C_base, p, sC_l, nt, sC_n, t_ok, nt_ok)\n"
     "        dt = tl.where(td_ok, _softplus(")]
VARIANTS.update({"B, C in input dtype": _BC_NATIVE, "B, C not prefetched": _BC_NO_PREFETCH,
                 "B, C input dtype, not prefetched": _BC_NATIVE + _BC_NO_PREFETCH})


class _LastLaunch:
    """Stands in for a module's Triton kernel and keeps the compiled kernel of its last launch
    (registers, spills)."""

    def __init__(self, fn):
        self.fn, self.last = fn, None

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            self.last = self.fn[grid](*args, **kwargs)
            return self.last
        return launch


def variants() -> None:
    from mambast.ops import triton_scan as ts
    src = Path(ts.__file__).read_text()
    tmp = Path(tempfile.mkdtemp())
    mods = {}
    for i, (name, subs) in enumerate(VARIANTS.items()):
        s = src.replace('"mambast::selective_scan_2d"', f'"mambast::scan_variant_{i}"')
        for a, b in subs:
            if a not in s:
                raise SystemExit(f"variant {name!r}: the kernel source no longer contains {a!r}")
            s = s.replace(a, b)
        path = tmp / f"scan_variant_{i}.py"
        path.write_text(s)
        spec = importlib.util.spec_from_file_location(path.stem, path)
        mods[name] = importlib.util.module_from_spec(spec)
        sys.modules[path.stem] = mods[name]
        spec.loader.exec_module(mods[name])
        mods[name]._scan_fwd_kernel = _LastLaunch(mods[name]._scan_fwd_kernel)
    for bt in (16, 1):
        _, args = _inputs(bt)
        ref = None
        for name, m in mods.items():
            cfg = m.default_config(bt, DM)
            with torch.no_grad():
                out = m._launch_fwd(*args, SIDE, SIDE, cfg, False)[0]
                ref = out if ref is None else ref
                ms = _ms(lambda: m._launch_fwd(*args, SIDE, SIDE, cfg, False))
            k = m._scan_fwd_kernel.last
            err = bench.rel_err(out, ref)
            print(f"batch {bt:2d} {name:34s} {ms:.3f} ms, {k.n_regs} registers, {k.n_spills} spilled, "
                  f"max rel. difference from the first {err:.1e}", flush=True)


def registers() -> None:
    from mambast.ops import triton_scan as ts
    for bt, tiles in ((16, [(8, 32, 1, 1), (4, 32, 1, 1), (8, 64, 2, 1)]), (1, [(16, 32, 4, 4), (8, 32, 4, 4)])):
        xs, args = _inputs(bt)
        ref = ts.selective_scan_2d_triton(*xs, SIDE, SIDE)
        for t, bd, lanes, w in tiles:
            cfg = ts.ScanKernelConfig(tile_fwd=t, block_d_fwd=bd, lanes_fwd=lanes, warps_fwd=w, chunk=max(16, t))
            for maxnreg in (0, 232, 200, 168, 128):
                launch = dict(maxnreg=maxnreg) if maxnreg else {}
                f = lambda: ts._launch_fwd(*args, SIDE, SIDE, cfg, False, **launch)[0]  # noqa: E731
                err = bench.rel_err(f(), ref)
                print(f"batch {bt:2d} tile {t} channels {bd} lanes {lanes} warps {w} maxnreg {maxnreg or '-':>4}: "
                      f"{_ms(f):.3f} ms (max rel. difference {err:.1e})", flush=True)


def graphs(bt: int = 16) -> None:
    from mambast.config import MambaSTConfig
    from mambast.graphs import GraphCache
    from mambast.infer import cast_autocast_weights
    from mambast.model import MambaST, draw_permutations
    from profile_gpu import compiled_parts
    torch.manual_seed(0)
    m = cast_autocast_weights(MambaST(MambaSTConfig()).cuda().eval(), torch.bfloat16)
    c, s = torch.rand(bt, 3, 512, 512, device="cuda"), torch.rand(bt, 3, 512, 512, device="cuda")
    parts = compiled_parts(m)

    def forward(c, s, perms):
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            return parts["decode"](parts["encode_content"](c), parts["encode_style"](s), perms)

    def ms_per_image(f, n=20):
        for _ in range(3):
            f(c, s, draw_permutations(3, SIDE * SIDE).cuda())
        torch.cuda.synchronize()
        times = []
        for _ in range(n):
            perms = draw_permutations(3, SIDE * SIDE).cuda()
            t = time.perf_counter()
            f(c, s, perms)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        return sorted(times)[n // 2] * 1000 / bt
    print(f"compiled, launched: {ms_per_image(forward):.3f} ms per image", flush=True)
    print(f"compiled, one CUDA graph: {ms_per_image(GraphCache(forward, max_graphs=1)):.3f} ms per image", flush=True)


def streams() -> None:
    from mambast.config import MambaSTConfig
    from mambast.graphs import GraphCache
    from mambast.infer import cast_autocast_weights
    from mambast.model import MambaST, draw_permutations
    from profile_gpu import compiled_parts
    torch.manual_seed(0)
    m = cast_autocast_weights(MambaST(MambaSTConfig()).cuda().eval(), torch.bfloat16)
    parts = compiled_parts(m)
    side = torch.cuda.Stream()

    def serial(c, s, perms):
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            return parts["decode"](parts["encode_content"](c), parts["encode_style"](s), perms)

    def two_streams(c, s, perms):
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                xs = parts["encode_style"](s)
            xc = parts["encode_content"](c)
            torch.cuda.current_stream().wait_stream(side)
            return parts["decode"](xc, xs, perms)

    for bt in (1, 2, 4):
        c, s = torch.rand(bt, 3, 512, 512, device="cuda"), torch.rand(bt, 3, 512, 512, device="cuda")
        perms = draw_permutations(3, SIDE * SIDE).cuda()
        ref = serial(c, s, perms)
        for name, f in (("serial", serial), ("two streams", two_streams)):
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            base = torch.cuda.memory_reserved()
            g = GraphCache(f, max_graphs=1)
            for _ in range(3):
                y = g(c, s, perms)
            torch.cuda.synchronize()
            err = ((y.float() - ref.float()).abs().max() / ref.float().abs().max()).item()
            mem = (torch.cuda.memory_reserved() - base) / 2 ** 20
            print(f"batch {bt} {name:12s}: {_ms(lambda: g(c, s, perms)) / bt:.3f} ms per image, graph pool + "
                  f"output {mem:.0f} MiB, max rel. difference to serial {err:.1e}", flush=True)
            del g, y


def memory() -> None:
    from mambast.config import MambaSTConfig
    from mambast.infer import cast_autocast_weights
    from mambast.model import MambaST, draw_permutations
    from profile_gpu import compiled_parts
    torch.manual_seed(0)
    m = cast_autocast_weights(MambaST(MambaSTConfig()).cuda().eval(), torch.bfloat16)
    parts = compiled_parts(m)
    mib = lambda b: f"{b / 2 ** 20:.1f} MiB"  # noqa: E731
    print(f"weights: {mib(torch.cuda.memory_allocated())}", flush=True)
    c, s = torch.rand(1, 3, 512, 512, device="cuda"), torch.rand(1, 3, 512, 512, device="cuda")
    perms = draw_permutations(3, SIDE * SIDE).cuda()
    cnn = torch.compile(m.cnn_decoder, dynamic=False)
    mamba = torch.compile(lambda xc, xs, p: m.decoder(xc, xs, shuffle=True, perms=p), dynamic=False)
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        xc, xs = parts["encode_content"](c), parts["encode_style"](s)
        tokens = mamba(xc, xs, perms)
        calls = {"encode_content": lambda: parts["encode_content"](c),
                 "decode (Mamba + CNN decoder)": lambda: parts["decode"](xc, xs, perms),
                 "Mamba decoder": lambda: mamba(xc, xs, perms),
                 "CNN decoder": lambda: cnn(tokens.permute(0, 3, 1, 2))}
        for name, f in calls.items():
            for _ in range(2):
                y = f()
            del y
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            y = f()
            torch.cuda.synchronize()
            print(f"{name:30s}: peak {mib(torch.cuda.max_memory_allocated() - base)} above what it starts from, "
                  f"output {mib(y.numel() * y.element_size())}", flush=True)
            del y
    before = torch.cuda.memory_allocated()
    with torch.cuda.stream(torch.cuda.Stream()):
        a = torch.randn(64, 64, device="cuda", dtype=torch.bfloat16)
        _ = a @ a
    torch.cuda.synchronize()
    print(f"a new stream's first matmul keeps {mib(torch.cuda.memory_allocated() - before - 2 * a.nbytes)} "
          "(cuBLAS workspace)", flush=True)


TILES = [(16, 32, 4, 4), (32, 32, 4, 4), (32, 16, 8, 4), (16, 16, 8, 4), (32, 8, 16, 4), (16, 8, 16, 4),
         (64, 8, 16, 4), (32, 32, 8, 8), (32, 16, 16, 8), (64, 16, 16, 8)]   # (tile, channels, lanes, warps)


def tiles() -> None:
    from mambast.ops import triton_scan as ts
    for bt in (1, 2):
        _, args = _inputs(bt)
        with torch.no_grad():
            ref = ts._launch_fwd(*args, SIDE, SIDE, ts.default_config(bt, DM), False)[0]
            for t, bd, lanes, w in TILES:
                cfg = ts.ScanKernelConfig(tile_fwd=t, block_d_fwd=bd, lanes_fwd=lanes, warps_fwd=w, chunk=max(16, t))
                f = lambda: ts._launch_fwd(*args, SIDE, SIDE, cfg, False)[0]  # noqa: E731
                err = bench.rel_err(f(), ref)
                print(f"batch {bt} tile {t:2d} channels {bd:2d} lanes {lanes:2d} warps {w}: {_ms(f):.3f} ms "
                      f"(max rel. difference {err:.1e})", flush=True)


GIVEN_TILES = [  # (tile, channels, lanes, warps); the first is DEFAULT_CONFIG's
    (8, 32, 1, 1), (4, 64, 1, 1), (4, 32, 1, 1), (2, 64, 1, 1), (2, 128, 1, 1), (4, 128, 1, 2), (8, 64, 1, 2),
    (4, 64, 1, 2), (8, 64, 2, 2)]


def given(bt: int = 16) -> None:
    """The inference scan given finished step sizes, at batch 16: tile configurations (two or four channels per
    thread when channels > 32 x warps / lanes)."""
    from mambast.ops import triton_scan as ts
    _, (u, dl, A2, B, C, D32, b32) = _inputs(bt)
    dt = torch.nn.functional.softplus(dl.float() + b32[None, :, None, :]).bfloat16()
    zero = torch.zeros_like(b32)
    with torch.no_grad():
        ref = None
        for t, bd, lanes, w in GIVEN_TILES:
            cfg = ts.ScanKernelConfig(tile_fwd=t, block_d_fwd=bd, lanes_fwd=lanes, warps_fwd=w, chunk=max(16, t))
            f = lambda: ts._launch_fwd(u, dt, A2, B, C, D32, zero, SIDE, SIDE, cfg, False, False)[0]  # noqa: E731
            ref = f() if ref is None else ref
            print(f"batch {bt} tile {t:2d} channels {bd:3d} lanes {lanes} warps {w}: {_ms(f):.3f} ms "
                  f"(max rel. difference {bench.rel_err(f(), ref):.1e})", flush=True)


SEGMENT_TILES = [  # (tile, channels, lanes, warps): DEFAULT_CONFIG's, FEW_SEQUENCES_CONFIG's and between
    (8, 32, 1, 1), (4, 32, 1, 1), (8, 32, 2, 2), (16, 32, 4, 4)]


def segments() -> None:
    from mambast.ops import triton_scan as ts
    for bt in (1, 2):
        _, args = _inputs(bt)
        with torch.no_grad():
            base = ts.default_config(bt, DM)
            ref = ts._launch_fwd(*args, SIDE, SIDE, base, False)[0]
            print(f"batch {bt} default {base}: {_ms(lambda: ts._launch_fwd(*args, SIDE, SIDE, base, False)[0]):.3f} ms",
                  flush=True)
            for t, bd, lanes, w in SEGMENT_TILES:
                for seg in (1, 4, 8, 16, 32):
                    cfg = ts.ScanKernelConfig(tile_fwd=t, block_d_fwd=bd, lanes_fwd=lanes, warps_fwd=w,
                                              chunk=max(16, t), segments_fwd=seg)
                    f = lambda cfg=cfg: ts._launch_fwd(*args, SIDE, SIDE, cfg, False)[0]  # noqa: E731
                    err = bench.rel_err(f(), ref)
                    print(f"batch {bt} tile {t:2d} channels {bd:2d} lanes {lanes} warps {w} segments {seg:2d}: "
                          f"{_ms(f):.3f} ms (max rel. difference {err:.1e})", flush=True)


def delta() -> None:
    """The step sizes at 512² (the layer's rank 32, bf16): cuBLAS's batched product (softplus left to the scan)
    against the Triton projection with softplus for several block shapes; the scan applying the softplus
    against the scan given the step sizes, both in the configuration of `default_config(batch, Dm)` (to isolate
    the softplus; `given` times configurations); the scan with B, C in bf16 and in float32."""
    from mambast.ops import triton_scan as ts
    from mambast.ops.triton_delta import DELTA_BLOCK, _launch, delta_softplus_ref, delta_softplus_triton
    R = 32
    blocks = [DELTA_BLOCK] + [b for b in [(64, 128, 4), (64, 128, 8), (128, 128, 4), (128, 128, 8), (64, 256, 8),
                                          (128, 64, 4), (32, 128, 4), (64, 64, 4), (64, 64, 2), (32, 64, 2)]
                              if b != DELTA_BLOCK]
    for bt in (16, 1):
        g = torch.Generator(device="cuda").manual_seed(0)
        proj = torch.randn(bt, SIDE * SIDE, 4, R + 2 * N, device="cuda", generator=g).bfloat16()
        low = proj.permute(0, 2, 1, 3)[..., :R]                           # [Bt, 4, L, R], strided as in the layer
        w = (torch.randn(4, DM, R, device="cuda", generator=g) * R ** -0.5).bfloat16()
        bias = torch.randn(4, DM, device="cuda", generator=g) * 0.5 - 4.0
        ref = delta_softplus_ref(low, w, bias)
        print(f"batch {bt:2d} dt projection: cuBLAS bmm {_ms(lambda: low @ w.transpose(1, 2)):.3f} ms", flush=True)
        for block in blocks:
            err = bench.rel_err(delta_softplus_triton(low, w, bias, block=block), ref)
            ms = _ms(lambda: delta_softplus_triton(low, w, bias, block=block))
            print(f"batch {bt:2d} Triton with softplus, block {block}: {ms:.3f} ms (max rel. difference {err:.1e})",
                  flush=True)
        for native, short in ((False, False), (True, False), (False, True)):
            f = lambda: _launch(low, w, bias, DELTA_BLOCK, native, short)  # noqa: E731
            print(f"batch {bt:2d} Triton with softplus, block {DELTA_BLOCK}, bf16 products {native}, degree "
                  f"{5 if short else 8}: {_ms(f):.3f} ms (max rel. difference {bench.rel_err(f(), ref):.1e})",
                  flush=True)
        _, args = _inputs(bt)
        u, dl, A2, B, C, D32, b32 = args
        cfg = ts.default_config(bt, DM)
        dt = torch.nn.functional.softplus(dl.float() + b32[None, :, None, :]).bfloat16()
        zero = torch.zeros_like(b32)
        runs = (("applying the softplus", lambda: ts._launch_fwd(u, dl, A2, B, C, D32, b32, SIDE, SIDE, cfg, False)),
                ("given the step sizes", lambda: ts._launch_fwd(u, dt, A2, B, C, D32, zero, SIDE, SIDE, cfg, False,
                                                                False)),
                ("with B, C in float32", lambda: ts._launch_fwd(u, dl, A2, B.float(), C.float(), D32, b32, SIDE,
                                                                SIDE, cfg, False)))
        want = runs[0][1]()[0]
        for name, f in runs:
            print(f"batch {bt:2d} scan {name}: {_ms(f):.3f} ms (max rel. difference {bench.rel_err(f()[0], want):.1e})",
                  flush=True)


def poly(bt: int = 16) -> None:
    """The inference scan given step sizes at batch 16, GIVEN_STEPS_CONFIG with 0-8 of each thread's 16 decays
    exp2(dt A) computed on the FMA units (`fma_decays_fwd`), the others on the special-function unit."""
    from mambast.ops import triton_scan as ts
    _, (u, dl, A2, B, C, D32, b32) = _inputs(bt)
    dt = torch.nn.functional.softplus(dl.float() + b32[None, :, None, :]).bfloat16()
    zero = torch.zeros_like(b32)
    with torch.no_grad():
        ref = None
        for n in (0, 1, 2, 3, 4, 6, 8, 0):
            cfg = dataclasses.replace(ts.GIVEN_STEPS_CONFIG, fma_decays_fwd=n)
            f = lambda: ts._launch_fwd(u, dt, A2, B, C, D32, zero, SIDE, SIDE, cfg, False, False)[0]  # noqa: E731
            ref = f() if ref is None else ref
            print(f"batch {bt} {cfg}: {_ms(f):.3f} ms (max rel. difference {bench.rel_err(f(), ref):.1e})",
                  flush=True)


def one(bt: int = 16, fma_decays: int = -1) -> None:
    """Two inference forwards given the step sizes, in the default configuration or with `fma_decays` decays per
    thread on the FMA units (for Nsight Compute)."""
    from mambast.ops import triton_scan as ts
    xs, _ = _inputs(bt)
    cfg = ts.default_config(bt, DM, given_steps=True)
    if fma_decays >= 0:
        cfg = dataclasses.replace(cfg, fma_decays_fwd=fma_decays)
    with torch.no_grad():
        for _ in range(2):
            ts.selective_scan_2d_triton(*xs, SIDE, SIDE, config=cfg, delta_softplus=False)
    torch.cuda.synchronize()


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else ""
    runs = {"variants": variants, "registers": registers, "graphs": graphs, "streams": streams, "memory": memory,
            "tiles": tiles, "segments": segments, "delta": delta, "given": given, "one": one, "poly": poly}
    if what not in runs or not torch.cuda.is_available():
        raise SystemExit(__doc__)
    runs[what](*(int(a) for a in sys.argv[2:]))
