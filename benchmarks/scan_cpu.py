"""CPU speed of the fused selective scan (`selective_scan_2d_cpu`) against the reference loop.

Usage (repository root on PYTHONPATH):
    python benchmarks/scan_cpu.py [--threads 2] [--runs 10] [--ref-runs 3] [--out DIR]
--out DIR also writes DIR/scan-cpu.json (a header record, then one record per size).
Bt=1, Dm=1024, N=16 on 32x32 and 64x64 grids, model-like inputs; medians after a warm-up call (numba's
compile or cache load excluded), float32 inputs; relative error = ||fast - ref|| / ||ref||.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from pathlib import Path

import torch

from common import cpu_name, header, time_calls, write_json  # benchmarks/common.py; puts the repository on sys.path
from mambast.ops.scan_cpu import kernel_available, selective_scan_2d_cpu
from mambast.ops.scan_ref import selective_scan_2d_ref


def make_inputs(Bt, Dm, N, H, W, seed=0):
    """softplus(delta + delta_bias) log-uniform in [1e-3, 2], A in [-16, -0.5], the rest standard normal."""
    g = torch.Generator().manual_seed(seed)
    L = H * W
    bias = 0.5 * torch.randn(4, Dm, generator=g)
    dt = torch.exp(torch.empty(Bt, 4, L, Dm).uniform_(math.log(1e-3), math.log(2.0), generator=g))
    return dict(u=torch.randn(Bt, L, Dm, generator=g),
                delta=torch.log(torch.expm1(dt)) - bias[None, :, None, :],
                A=-torch.empty(4, Dm, N).uniform_(0.5, 16.0, generator=g),
                B=torch.randn(Bt, 4, L, N, generator=g), C=torch.randn(Bt, 4, L, N, generator=g),
                D=torch.randn(4, Dm, generator=g), delta_bias=bias)


def median_seconds(fn, runs):
    return statistics.median(time_calls(fn, runs))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2, help="torch (and so numba) threads (default 2)")
    ap.add_argument("--runs", type=int, default=10, help="timed calls of the fused scan per size")
    ap.add_argument("--ref-runs", type=int, default=3, help="timed calls of the reference per size")
    ap.add_argument("--dm", type=int, default=1024)
    ap.add_argument("--d-state", type=int, default=16)
    ap.add_argument("--out", type=Path, help="also write DIR/scan-cpu.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not kernel_available():
        print("numba is not installed: nothing to benchmark")
        return 1
    import numba
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"# {cpu_name()}, {os.cpu_count()} cores, load average {load:.2f}; "
          f"torch {torch.__version__}, numba {numba.__version__}, threads {args.threads}")
    print(f"# Bt=1, Dm={args.dm}, N={args.d_state}; fast: median of {args.runs}, reference: median of "
          f"{args.ref_runs}")
    print(f"{'L':>6} {'grid':>7} {'ref s':>9} {'fast s':>9} {'speed-up':>9} {'rel err':>9}")
    records = [{"header": header("cpu", None, numba=numba.__version__, load_average=round(load, 2),
                                 bt=1, dm=args.dm, n=args.d_state, runs=args.runs, ref_runs=args.ref_runs)}]
    with torch.inference_mode():
        for side in (32, 64):
            x = make_inputs(1, args.dm, args.d_state, side, side)
            t = time.perf_counter()
            y = selective_scan_2d_cpu(**x, H=side, W=side)           # warm-up (compile or cache load)
            first = time.perf_counter() - t
            fast = median_seconds(lambda: selective_scan_2d_cpu(**x, H=side, W=side), args.runs)
            ref_y = selective_scan_2d_ref(**x, H=side, W=side)
            ref = median_seconds(lambda: selective_scan_2d_ref(**x, H=side, W=side), args.ref_runs)
            err = ((y.double() - ref_y.double()).norm() / ref_y.double().norm()).item()
            print(f"{side * side:>6} {f'{side}x{side}':>7} {ref:>9.4f} {fast:>9.4f} {ref / fast:>8.1f}x "
                  f"{err:>9.2e}" + (f"   (first call {first:.2f} s)" if side == 32 else ""))
            records.append({"length": side * side, "grid": f"{side}x{side}", "ref_s": round(ref, 5),
                            "fast_s": round(fast, 5), "speedup": round(ref / fast, 1), "rel_err": err,
                            "first_call_s": round(first, 3)})
    if args.out:
        write_json(args.out / "scan-cpu.json", records)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
