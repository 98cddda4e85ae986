"""Loss curves of the real trainer with the fast scan against the reference scan, from the same seed and data.

Usage (repository root):
    python benchmarks/train_parity.py --out DIR [--steps 200] [--crop 64] [--batch 4] [--config default] [--compile]
CPU smoke test:  python benchmarks/train_parity.py --out DIR --config tiny --steps 20 --crop 32 --batch 2
Runs `mambast.train.train` three times with one configuration and seed (model initialisation, data order,
augmentation and dropout alike; data loaded in the main process): twice with the fast scan (Triton on CUDA, the
fused CPU kernel on the CPU, whose backward is the reference's) and once under `mambast.ops.use_impl("ref")` (the
reference scan, a Python loop over tokens: keep --crop small); with --compile a fourth run, fast and through
torch.compile as `mambast train --compile` runs. The two fast runs show the noise floor (on CUDA the fused scan
adds with atomics, so repeated runs differ in the last bits and drift apart); the reference run shows whether the
fast path trains the same model, and the compiled run whether the compiled step does. The loss network is a
randomly initialised VGG-19 unless --vgg is given (parity, not quality).
Writes DIR/train-parity.json: a header record, then per loss term the curves (the log's mean of every
--log-every steps) and the largest relative gaps between them over the run's second half; DIR/train-parity.png
plots them when matplotlib is installed. Exits 1 if a run failed.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from pathlib import Path

import torch

from common import header, write_json  # benchmarks/common.py; puts the repository on sys.path
from folder import make_images  # noqa: E402  (benchmarks/folder.py: smooth JPEGs with noise)

from mambast import ops  # noqa: E402
from mambast.train import TrainConfig, train  # noqa: E402
from mambast.train.trainer import LOG_TERMS  # noqa: E402

RUNS = (("fast", "auto", False), ("fast, again", "auto", False), ("reference scan", "ref", False))
COMPILED = ("fast, compiled", "auto", True)


def read_log(path: Path) -> dict[str, list[float]]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {key: [float(r[key]) for r in rows] for key in ("step",) + LOG_TERMS}


def largest_gap(a: list[float], b: list[float]) -> float:
    """max |a - b| / max(|b|, tiny) over the second half of the curves (after the first steps' transient)."""
    half = len(a) // 2
    return max((abs(x - y) / max(abs(y), 1e-12) for x, y in zip(a[half:], b[half:])), default=float("nan"))


def plot(curves: dict[str, dict[str, list[float]]], path: Path) -> str | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no plot (pip install matplotlib)"
    fig, axes = plt.subplots(1, len(LOG_TERMS), figsize=(4 * len(LOG_TERMS), 3.2))
    for ax, term in zip(axes, LOG_TERMS):
        for name, log in curves.items():
            ax.plot(log["step"], log[term], label=name, linewidth=1)
        ax.set_title(term)
        ax.set_xlabel("step")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for train-parity.json and .png")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--crop", type=int, default=64, help="training crop side (the reference scan is slow: keep small)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--config", default="default", help="model config: default or tiny")
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--vgg", default="", help="VGG-19 weights (default: a random VGG-19, no download)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--compile", action="store_true",
                    help="also a fast run through torch.compile (`mambast train --compile`)")
    ap.add_argument("--commit", default="", help="commit to record in the header (default: the checkout's)")
    args = ap.parse_args()
    if args.steps < 2 * args.log_every:
        ap.error(f"--steps must be at least twice --log-every ({args.log_every}) to compare curves")
    args.out.mkdir(parents=True, exist_ok=True)
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    device = "cpu" if device == "auto" else device
    head = header(device, args.commit or None, steps=args.steps, crop=args.crop, batch=args.batch,
                  config=args.config, vgg=args.vgg or "random VGG-19", compiled_run=args.compile)
    curves, failed = {}, False
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        side = max(args.crop + args.crop // 2, 48)
        make_images(work / "content", 16, side, 0)
        make_images(work / "style", 16, side, 1)
        for name, impl, with_compile in RUNS + ((COMPILED,) if args.compile else ()):
            out = work / name.replace(", ", "-").replace(" ", "-")
            cfg = TrainConfig(content=str(work / "content"), style=str(work / "style"), out=str(out),
                              size=side, crop=args.crop, batch_size=args.batch, steps=args.steps,
                              log_every=args.log_every, ckpt_every=0, sample_every=0, progress=False,
                              print_every=10 ** 9, workers=0, seed=0, config=args.config, vgg=args.vgg,
                              device=device, compile=with_compile)
            vgg = None
            if not args.vgg:
                from mambast.networks.vgg import VGG19Features
                torch.manual_seed(0)
                vgg = VGG19Features()
            print(f"== {name} ({impl})", file=sys.stderr, flush=True)
            with ops.use_impl(impl):
                code = train(cfg, vgg=vgg)
            if code:
                print(f"train_parity.py: the {name} run exited with {code}", file=sys.stderr)
                failed = True
                continue
            curves[name] = read_log(out / "log.csv")
    records = [{"header": head}]
    fast, again, ref, compiled = (curves.get(name) for name, _, _ in RUNS + (COMPILED,))
    for term in LOG_TERMS:
        rec = {"term": term, "curves": {name: log[term] for name, log in curves.items()},
               "steps": (fast or ref or {"step": []})["step"]}
        if fast and again:
            rec["gap_fast_vs_fast"] = largest_gap(again[term], fast[term])
        if fast and ref:
            rec["gap_fast_vs_reference"] = largest_gap(fast[term], ref[term])
        if compiled and fast:
            rec["gap_compiled_vs_fast"] = largest_gap(compiled[term], fast[term])
        if compiled and ref:
            rec["gap_compiled_vs_reference"] = largest_gap(compiled[term], ref[term])
        records.append(rec)
        print(f"{term:>10}: " + ", ".join(f"{key[4:].replace('_', ' ')} {rec[key]:.2e}" for key in rec
                                           if key.startswith("gap_")) + " (largest relative gap, second half)")
    write_json(args.out / "train-parity.json", records)
    note = plot(curves, args.out / "train-parity.png") if curves else None
    if note:
        print(note, file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
