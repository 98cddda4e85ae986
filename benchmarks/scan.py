"""GPU speed of the fused Triton selective scan against the reference loop and a plain PyTorch scan.

Usage (CUDA machine, repository root on PYTHONPATH): python benchmarks/scan.py --out DIR [--sweep] [--sweep-train]
Bt=1, Dm=1024, N=16 on square grids (L = 32^2, 64^2, 128^2); forward and forward+backward; medians
of triton.testing.do_bench after warm-up. Checks the Triton results first and exits 1 if they are wrong.
--sweep-train times forward + backward at a training step's shapes (batches of --train-batches, a 32 x 32 grid,
bf16) for backward tile configurations in the forward's layout, TRAINING_CONFIG first, each checked against it.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from common import header, time_calls, write_json  # benchmarks/common.py; puts the repository on sys.path
from mambast.ops.scan_ref import scan_orders, selective_scan_2d_ref

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
DEVICE = "cuda"        # "cpu" only for a smoke test of this script (TRITON_INTERPRET=1, tiny sizes)
REF_MAX_L = 1024       # the reference is a Python loop over L: timed up to here, extrapolated per token above
SWEEP_L = 4096


def make_inputs(Bt, Dm, N, H, W, dtype, seed=0):
    """Random scan inputs on the GPU in the layout of `selective_scan_2d_ref` (A negative, as in the model)."""
    g = torch.Generator(device=DEVICE).manual_seed(seed)
    L = H * W
    kw = dict(device=DEVICE, generator=g)
    xs = [torch.randn(Bt, L, Dm, **kw), torch.randn(Bt, 4, L, Dm, **kw) * 0.5 - 2.0,
          -torch.arange(1, N + 1, device=DEVICE).float().expand(4, Dm, N).contiguous(),
          torch.randn(Bt, 4, L, N, **kw), torch.randn(Bt, 4, L, N, **kw),
          torch.ones(4, Dm, device=DEVICE), torch.randn(4, Dm, **kw) * 0.1]
    return [x.to(dtype) if i in (0, 1, 3, 4) else x for i, x in enumerate(xs)]


def scan_2d_torch(u, delta, A, B, C, D, delta_bias, H, W):
    """Plain PyTorch baseline: the per-step decays and inputs materialised as [Bt, 4, L, Dm, N] float32
    tensors, scanned in log2(L) doubling steps (Hillis-Steele), read out and merged with index_add."""
    Bt, K, L, Dm = delta.shape
    idx = scan_orders(H, W, u.device)                                            # [4, L]
    dt = F.softplus(delta.float() + delta_bias.float()[None, :, None, :])        # [Bt, 4, L, Dm]
    dt = torch.stack([dt[:, k, idx[k]] for k in range(K)], 1)                    # scan order
    us = u.float()[:, idx]                                                       # [Bt, 4, L, Dm]
    Bs = torch.stack([B[:, k, idx[k]] for k in range(K)], 1).float()             # [Bt, 4, L, N]
    Cs = torch.stack([C[:, k, idx[k]] for k in range(K)], 1).float()
    a = torch.exp(dt[..., None] * A.float()[None, :, None])                      # [Bt, 4, L, Dm, N]
    b = (dt * us)[..., None] * Bs[:, :, :, None, :]
    s = 1
    while s < L:  # (a, b)_t <- (a_{t-s}, b_{t-s}) then (a_t, b_t)
        b = torch.cat([b[:, :, :s], a[:, :, s:] * b[:, :, :-s] + b[:, :, s:]], 2)
        a = torch.cat([a[:, :, :s], a[:, :, s:] * a[:, :, :-s]], 2)
        s *= 2
    y = (b * Cs[:, :, :, None, :]).sum(-1) + D.float()[None, :, None] * us       # [Bt, 4, L, Dm]
    out = torch.zeros(Bt, L, Dm, device=u.device)
    for k in range(K):
        out.index_add_(1, idx[k], y[:, k])
    return out


def torch_baseline_fits(Bt, L, Dm, N, backward):
    """Whether the materialised baseline plausibly fits in free GPU memory (it keeps ~6, or ~4 log2 L + 6
    with autograd, float32 tensors of Bt * 4 * L * Dm * N elements)."""
    if DEVICE != "cuda":
        return True
    size = Bt * 4 * L * Dm * N * 4
    copies = 4 * math.log2(L) + 6 if backward else 6
    return size * copies < 0.8 * torch.cuda.mem_get_info()[0]


def min_bytes(Bt, L, Dm, N, dtype, backward):
    """Bytes a scan must move at least: each input read once and each output written once per pass
    (the forward+backward pair reads the inputs twice and the output gradient once)."""
    e = torch.tensor([], dtype=dtype).element_size()
    inputs = Bt * L * Dm * e + Bt * 4 * L * Dm * e + 2 * Bt * 4 * L * N * e + (4 * Dm * N + 8 * Dm) * 4
    fwd = inputs + Bt * L * Dm * 4
    if not backward:
        return fwd
    grads_out = Bt * L * Dm * 4                                        # dL/dy, float32
    grads_in = inputs                                                  # one gradient per input, same sizes
    return fwd + inputs + grads_out + grads_in


def rel_err(x, ref):
    return ((x.float() - ref.float()).abs().max() / ref.float().abs().max()).item()


def time_ms(fn, slow=False):
    """Median milliseconds: do_bench (L2 flushed between runs) or, for the slow loop, 3 timed runs."""
    if DEVICE != "cuda":
        return statistics.median(time_calls(fn, 3)) * 1e3
    if not slow:
        import triton.testing
        return triton.testing.do_bench(fn, warmup=25, rep=200, return_mode="median")
    fn()
    times = []
    for _ in range(3):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def fwd_and_fwdbwd(fn, xs, H, W):
    """Callables for the forward and for forward + backward (gradients of every input)."""
    leaves = [x.detach().requires_grad_() for x in xs]
    gy = torch.randn(xs[0].shape[0], H * W, xs[0].shape[2], device=DEVICE)

    def fwd():
        with torch.no_grad():
            return fn(*xs, H, W)

    def fwdbwd():
        return torch.autograd.grad(fn(*leaves, H, W), leaves, gy)

    return fwd, fwdbwd


def check(scan, dtype, H, W, Dm=1024, N=16):
    """Triton against the reference at one size: forward and every gradient, relative max error."""
    xs = make_inputs(1, Dm, N, H, W, dtype, seed=1)
    gy = torch.randn(1, H * W, Dm, device=DEVICE)
    res = {}
    outs = []
    for fn in (scan, selective_scan_2d_ref):
        leaves = [x.detach().requires_grad_() for x in xs]
        y = fn(*leaves, H, W)
        outs.append((y, torch.autograd.grad(y, leaves, gy)))
    (y, g), (y_ref, g_ref) = outs
    res["out"] = rel_err(y, y_ref)
    for name, a, b in zip(("u", "delta", "A", "B", "C", "D", "delta_bias"), g, g_ref):
        res["d" + name] = rel_err(a, b)
    tol = 1e-4 if dtype == torch.float32 else 2e-2     # bf16 gradients are rounded to bf16
    return res, all(v < tol for v in res.values())


# backward configurations in the forward's layout: (chunk = tile_fwd, channels per program, lanes per state, warps)
TRAIN_SWEEP = ((4, 16, 2, 1), (4, 32, 2, 1), (4, 32, 2, 2), (4, 64, 2, 2), (4, 64, 2, 4), (4, 16, 4, 1),
               (4, 32, 4, 1), (4, 32, 4, 2), (4, 64, 4, 2), (4, 16, 8, 1), (4, 32, 8, 1), (4, 32, 1, 1),
               (4, 16, 1, 1), (8, 16, 2, 1), (8, 32, 2, 2))


def sweep_train(args, report, training_config, scan) -> bool:
    """Forward + backward at a training step's shapes for TRAIN_SWEEP (TRAINING_CONFIG first): ms per call and
    G state-steps per second; each configuration's gradients against TRAINING_CONFIG's (a wrong configuration
    is reported and fails the run, not timed as if it were right)."""
    side, Dm, N = args.train_side, args.dm, args.n
    L = side * side
    configs = [training_config] + [dataclasses.replace(training_config, chunk=c, tile_fwd=c, block_d_bwd=bd,
                                                       lanes_bwd=nl, warps_bwd=w)
                                   for c, bd, nl, w in TRAIN_SWEEP]
    configs = list(dict.fromkeys(configs))                    # TRAINING_CONFIG once, first
    ok_all = True
    print(f"\nbackward sweep at a training step's shapes: L={L}, Dm={Dm}, N={N}, bf16; ms per forward + backward")
    for bt in (int(b) for b in args.train_batches.split(",")):
        xs = make_inputs(bt, Dm, N, side, side, torch.bfloat16)
        steps = bt * 4 * L * Dm * N
        reference = None
        for cfg in configs:
            torch.manual_seed(0)                               # the same output gradient for every configuration
            _, fwdbwd = fwd_and_fwdbwd(lambda *a, cfg=cfg: scan(*a, config=cfg), xs, side, side)
            grads = fwdbwd()
            if reference is None:
                reference = grads
            err = max(rel_err(a, b) for a, b in zip(grads, reference))
            ok = err < 2e-2                                    # bf16 gradients, atomics in another order
            ok_all &= ok
            ms = time_ms(fwdbwd) if ok else float("nan")
            report["sweep_train"].append({"Bt": bt, "L": L, "config": dataclasses.asdict(cfg), "ms": ms,
                                          "g_state_steps_per_s": steps / ms / 1e6, "max_rel_err_vs_first": err,
                                          "ok": ok})
            print(f"  Bt={bt:3d} chunk {cfg.chunk} D{cfg.block_d_bwd} lanes{cfg.lanes_bwd} w{cfg.warps_bwd}: "
                  f"{ms:8.3f} ms  {steps / ms / 1e6:8.1f} G/s  (grads vs first {err:.1e}{'' if ok else ' WRONG'})")
        del xs
    return ok_all


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("out/bench_scan"), help="folder for scan_benchmark.json")
    ap.add_argument("--lengths", default="32,64,128", help="square grid sides (L = side^2)")
    ap.add_argument("--dtypes", default="fp32,bf16", help="input dtypes among fp32, bf16")
    ap.add_argument("--dm", type=int, default=1024)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--peak-gbps", type=float, default=3000.0, help="memory bandwidth to compare with (H100 ~3 TB/s)")
    ap.add_argument("--sweep", action="store_true", help="also time a few tile configurations at --sweep-l")
    ap.add_argument("--sweep-l", type=int, default=SWEEP_L, help="sequence length (a square) of the sweep")
    ap.add_argument("--sweep-batches", default="1,2,16", help="batch sizes of the forward sweep")
    ap.add_argument("--sweep-train", action="store_true",
                    help="also time backward configurations at a training step's shapes (see the docstring)")
    ap.add_argument("--train-batches", default="16,24", help="batches of --sweep-train (2B and 3B at batch 8)")
    ap.add_argument("--train-side", type=int, default=32, help="grid side of --sweep-train (256² crops: 32)")
    ap.add_argument("--device", default="cuda", help="cuda; cpu only smoke-tests this script (TRITON_INTERPRET=1)")
    ap.add_argument("--check-sizes", default="32x32,13x40", help="grids H x W of the correctness checks")
    args = ap.parse_args()
    global DEVICE
    DEVICE = args.device
    if DEVICE == "cuda" and not torch.cuda.is_available():
        print("benchmarks/scan.py needs a CUDA device", file=sys.stderr)
        return 2
    import triton

    from mambast.ops.triton_scan import (DEFAULT_CONFIG, FEW_SEQUENCES, FEW_SEQUENCES_CONFIG, ONE_IMAGE,
                                         ONE_IMAGE_CONFIG, TRAINING_CONFIG, ScanKernelConfig,
                                         selective_scan_2d_triton)

    sides = [int(s) for s in args.lengths.split(",")]
    dtypes = [d.strip() for d in args.dtypes.split(",")]
    Dm, N = args.dm, args.n
    report = {"header": header(DEVICE), "device": torch.cuda.get_device_name() if DEVICE == "cuda" else DEVICE,
              "torch": torch.__version__, "triton": triton.__version__, "Bt": 1, "Dm": Dm, "N": N, "peak_gbps": args.peak_gbps,
              "default_config": dataclasses.asdict(DEFAULT_CONFIG),
              "few_sequences_config": dataclasses.asdict(FEW_SEQUENCES_CONFIG),
              "few_sequences_below": FEW_SEQUENCES,
              "one_image_config": dataclasses.asdict(ONE_IMAGE_CONFIG),   # inference only
              "one_image_up_to": ONE_IMAGE, "training_config": dataclasses.asdict(TRAINING_CONFIG),
              "checks": [], "results": [], "sweep": [], "sweep_train": []}
    print(f"{report['device']}  torch {torch.__version__}  triton {triton.__version__}  Bt=1 Dm={Dm} N={N}")

    # ---- correctness first: Triton vs the reference (forward and all gradients)
    ok_all = True
    for name in dtypes:
        for H, W in (tuple(int(v) for v in hw.split("x")) for hw in args.check_sizes.split(",")):
            res, ok = check(selective_scan_2d_triton, DTYPES[name], H, W, Dm, N)
            ok_all &= ok
            report["checks"].append({"dtype": name, "H": H, "W": W, "ok": ok, "rel_err": res})
            worst = max(res, key=res.get)
            print(f"check {name} {H}x{W}: {'OK' if ok else 'FAIL'} (worst rel err {worst} {res[worst]:.1e})")

    # ---- timings
    impls = {"triton": selective_scan_2d_triton, "torch": scan_2d_torch, "ref": selective_scan_2d_ref}
    ref_per_token = {}
    columns = f"{'impl':7} {'dtype':5} {'L':>6} {'pass':8} {'ms':>10} {'us/token':>9} {'GB/s':>8} {'of peak':>8}"
    print(columns)
    for name in dtypes:
        dtype = DTYPES[name]
        for side in sides:
            H = W = side
            L = H * W
            xs = make_inputs(1, Dm, N, H, W, dtype)
            for impl, fn in impls.items():
                if impl != "triton" and name != dtypes[0]:
                    continue          # the baselines compute in float32 whatever the input dtype
                fwd, fwdbwd = fwd_and_fwdbwd(fn, xs, H, W)
                for pas, call in (("fwd", fwd), ("fwd+bwd", fwdbwd)):
                    backward = pas != "fwd"
                    row = {"impl": impl, "dtype": name, "L": L, "H": H, "W": W, "pass": pas, "estimated": False}
                    try:
                        if impl == "ref" and L > REF_MAX_L and pas in ref_per_token:
                            ms = ref_per_token[pas] * L
                            row["estimated"] = True
                        elif impl == "torch" and not torch_baseline_fits(1, L, Dm, N, backward):
                            row["skipped"] = "would not fit in GPU memory"
                            ms = None
                        else:
                            ms = time_ms(call, slow=impl == "ref")
                            if impl == "ref":
                                ref_per_token[pas] = ms / L
                    except torch.OutOfMemoryError:
                        row["skipped"] = "out of GPU memory"
                        ms = None
                    if DEVICE == "cuda":
                        torch.cuda.empty_cache()
                    row["ms"] = ms
                    if ms is not None:
                        nbytes = min_bytes(1, L, Dm, N, dtype, backward)
                        gbps = nbytes / ms / 1e6
                        row.update(min_bytes=nbytes, gbps=gbps, frac_peak=gbps / args.peak_gbps,
                                   us_per_token=ms * 1e3 / L)
                        note = " (estimated from L=%d)" % REF_MAX_L if row["estimated"] else ""
                        print(f"{impl:7} {name:5} {L:6d} {pas:8} {ms:10.3f} {row['us_per_token']:9.3f} "
                              f"{row['gbps']:8.1f} {row['frac_peak']:8.1%}{note}")
                    else:
                        print(f"{impl:7} {name:5} {L:6d} {pas:8} {'-':>10}  {row['skipped']}")
                    report["results"].append(row)
            del xs

    # ---- speed-ups of Triton over the baselines
    by_key = {(r["impl"], r["dtype"], r["L"], r["pass"]): r["ms"] for r in report["results"]}
    print("\nspeed-up of triton (same L and pass; baselines in float32)")
    for name in dtypes:
        for side in sides:
            L = side * side
            for pas in ("fwd", "fwd+bwd"):
                t = by_key.get(("triton", name, L, pas))
                parts = []
                for base in ("torch", "ref"):
                    b = by_key.get((base, dtypes[0], L, pas))
                    if t and b:
                        parts.append(f"x{b / t:,.1f} vs {base}")
                print(f"  {name:5} L={L:6d} {pas:8} " + ", ".join(parts))

    # ---- forward tile configurations at each --sweep-batches (inference), then a few for forward + backward
    if args.sweep:
        side = int(math.isqrt(args.sweep_l))
        L = side * side
        C = ScanKernelConfig
        fwd_configs = [C(tile_fwd=t, block_d_fwd=bd, warps_fwd=w, lanes_fwd=nl) for t, bd, w, nl in (
            (4, 128, 4, 1), (2, 128, 4, 1), (4, 64, 2, 1), (4, 32, 1, 1), (4, 256, 8, 1),
            (4, 64, 2, 2), (4, 128, 4, 2), (4, 32, 4, 4), (4, 64, 4, 4), (2, 64, 4, 4), (8, 32, 4, 4),
            (4, 128, 8, 4), (4, 16, 4, 8), (4, 32, 8, 8), (2, 16, 4, 8), (4, 8, 4, 16),
            (8, 32, 1, 1), (8, 64, 2, 1), (16, 32, 4, 4), (8, 16, 4, 8), (8, 64, 8, 4), (8, 64, 4, 2),
            (2, 32, 1, 1), (8, 128, 4, 1), (16, 32, 1, 1), (16, 64, 8, 4))]
        fwd_configs += [dataclasses.replace(FEW_SEQUENCES_CONFIG, segments_fwd=n) for n in (2, 4, 8)]
        fwd_configs += [ONE_IMAGE_CONFIG]
        sweep_dtype = DTYPES[dtypes[-1]]
        print(f"\nforward tile sweep at L={L} ({dtypes[-1]}): ms per call, G state updates per second")
        for bt in (int(b) for b in args.sweep_batches.split(",")):
            xs = make_inputs(bt, Dm, N, side, side, sweep_dtype)
            updates = bt * 4 * L * Dm * N
            for cfg in fwd_configs:
                fwd, _ = fwd_and_fwdbwd(lambda *a, cfg=cfg: selective_scan_2d_triton(*a, config=cfg), xs, side, side)
                ms = time_ms(fwd)
                report["sweep"].append({"pass": "fwd", "Bt": bt, "config": dataclasses.asdict(cfg), "ms": ms,
                                        "g_updates_per_s": updates / ms / 1e6})
                print(f"  Bt={bt:3d} T{cfg.tile_fwd} D{cfg.block_d_fwd} w{cfg.warps_fwd} lanes{cfg.lanes_fwd} "
                      f"segments{cfg.segments_fwd}: "
                      f"{ms:8.3f} ms  {updates / ms / 1e6:8.1f} G/s")
            best = min((r for r in report["sweep"] if r["Bt"] == bt), key=lambda r: r["ms"])
            print(f"  fastest forward at Bt={bt}: {best['config']} ({best['ms']:.3f} ms)")
            del xs
        xs = make_inputs(1, Dm, N, side, side, DTYPES[dtypes[0]])
        for cfg in (DEFAULT_CONFIG, C(chunk=16, block_d_bwd=16, warps_bwd=8), C(chunk=8, block_d_bwd=16),
                    C(chunk=16, block_d_bwd=32, warps_bwd=4), C(chunk=16, block_d_bwd=8, warps_bwd=2)):
            _, fwdbwd = fwd_and_fwdbwd(lambda *a, cfg=cfg: selective_scan_2d_triton(*a, config=cfg), xs, side, side)
            ms = time_ms(fwdbwd)
            report["sweep"].append({"pass": "fwd+bwd", "Bt": 1, "config": dataclasses.asdict(cfg), "ms": ms})
            print(f"  fwd+bwd Bt=1 {dtypes[0]} chunk {cfg.chunk} D{cfg.block_d_bwd} w{cfg.warps_bwd}: {ms:.3f} ms")

    if args.sweep_train:
        ok_all &= sweep_train(args, report, TRAINING_CONFIG, selective_scan_2d_triton)

    args.out.mkdir(parents=True, exist_ok=True)
    path = write_json(args.out / "scan_benchmark.json", report)
    print(f"\nwrote {path}; correctness checks {'passed' if ok_all else 'FAILED'}")
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
