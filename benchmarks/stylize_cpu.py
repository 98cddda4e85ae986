"""Seconds per 512 x 512 stylization on the CPU, and the peak resident memory of the process.

Usage: python benchmarks/stylize_cpu.py [--model PATH] [--size 512] [--threads 2] [--runs 5] [--out DIR]
--out DIR: every mode (float32, --bf16, --grad-mode), each in a fresh process (its own peak memory), into
DIR/stylize-cpu.json (a header record, then one record per mode).
Random weights of the reference configuration unless --model is given (speed does not depend on values).
Applies `mambast.keep_freed_memory()` as the `mambast` command does, unless --default-malloc.
--grad-mode: instead, the model's forward `m(content, style)` as a Python user calls it, with grad mode on
against under `torch.inference_mode()`, and their ratio.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
from pathlib import Path

import torch

from common import header, time_calls, write_json  # benchmarks/common.py; puts the repository on sys.path
from mambast import MambaST, keep_freed_memory
from mambast.inference.stylizer import stylize_tensor


MODES = {"float32": [], "bf16": ["--bf16"], "grad-mode": ["--grad-mode"]}


def all_modes(args) -> int:
    """Each mode in a fresh process (`--json`); DIR/stylize-cpu.json gets the header and their records."""
    passed = [f"--{k.replace('_', '-')}={v}" for k, v in (("model", args.model), ("size", args.size),
                                                          ("threads", args.threads), ("runs", args.runs)) if v]
    passed += ["--default-malloc"] if args.default_malloc else []
    records = [{"header": header("cpu", None, model=args.model or "random weights")}]
    for mode, flags in MODES.items():
        run = subprocess.run([sys.executable, __file__, *passed, *flags, "--json"], capture_output=True, text=True)
        if run.returncode:
            print(run.stderr, file=sys.stderr)
            return 1
        records.append({"mode": mode, **json.loads(run.stdout.strip().splitlines()[-1])})
        print(json.dumps(records[-1]), flush=True)
    write_json(args.out / "stylize-cpu.json", records)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the non-scan layers")
    ap.add_argument("--grad-mode", action="store_true",
                    help="time m(content, style) with grad mode on against under torch.inference_mode()")
    ap.add_argument("--default-malloc", action="store_true",
                    help="leave glibc's malloc as it is (the mambast command calls keep_freed_memory)")
    ap.add_argument("--out", type=Path, help="run every mode and write DIR/stylize-cpu.json")
    ap.add_argument("--json", action="store_true", help="print the result as one JSON line")
    args = ap.parse_args()
    if args.out:
        return all_modes(args)
    kept = False if args.default_malloc else keep_freed_memory()
    torch.set_num_threads(args.threads)
    model = MambaST.from_pretrained(args.model) if args.model else MambaST().eval()
    g = torch.Generator().manual_seed(0)
    content = torch.rand(1, 3, args.size, args.size, generator=g)
    style = torch.rand(1, 3, args.size, args.size, generator=g)
    dtype = torch.bfloat16 if args.bf16 else None
    if args.grad_mode:
        medians = {}
        for mode in ("inference_mode", "grad mode"):
            ctx = torch.inference_mode if mode == "inference_mode" else torch.enable_grad
            with ctx():
                model(content, style, generator=0)                                       # warm-up
                medians[mode] = statistics.median(time_calls(lambda: model(content, style, generator=0), args.runs))
        ratio = medians["grad mode"] / medians["inference_mode"]
        if args.json:
            print(json.dumps({"size": args.size, "threads": args.threads, "runs": args.runs,
                              "inference_mode_s": round(medians["inference_mode"], 3),
                              "grad_mode_s": round(medians["grad mode"], 3), "ratio": round(ratio, 3)}))
            return 0
        print(f"{args.size}x{args.size} m(content, style), {args.threads} threads: under inference_mode "
              f"{medians['inference_mode']:.2f} s, grad mode on {medians['grad mode']:.2f} s "
              f"(ratio {ratio:.2f}; median of {args.runs})")
        return 0
    stylize_tensor(model, content, style, size=None, seed=0, autocast_dtype=dtype)  # warm-up (JIT compile)
    times = time_calls(lambda: stylize_tensor(model, content, style, size=None, seed=0, autocast_dtype=dtype),
                       args.runs)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if args.json:
        print(json.dumps({"size": args.size, "threads": args.threads, "runs": args.runs,
                          "median_s": round(statistics.median(times), 3), "min_s": round(min(times), 3),
                          "max_s": round(max(times), 3), "peak_rss_mib": round(rss), "keep_freed_memory": kept}))
        return 0
    print(f"{args.size}x{args.size} {'bf16 autocast' if args.bf16 else 'float32'}, {args.threads} threads: "
          f"median {statistics.median(times):.2f} s per image (min {min(times):.2f}, max {max(times):.2f}, "
          f"{args.runs} runs after a warm-up); peak RSS {rss:.0f} MiB; "
          f"keep_freed_memory {'on' if kept else 'off'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
