"""Where the peak GPU memory of one `ours` / `ours-compiled` case of efficiency.py goes (CUDA machine, repo root).

Runs the efficiency cases named by --before first (as efficiency.py would, in one process), then the measured case
with the allocator's history recorded, and prints: the case's peak as efficiency.py counts it, then every memory
segment grouped by pool (a CUDA graph's private pool or the default one) and stream, and the live blocks grouped by
the Python line that allocated them.

    python benchmarks/memory.py                                   # ours-compiled, bf16, 512², batch 1, alone
    python benchmarks/memory.py --before ours,ours-compiled:16     # after those cases (METHOD[:BATCH])
    python benchmarks/memory.py --patch-conv                       # patch embedding through the conv module
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

import torch

import efficiency as eff  # noqa: E402  (beside this file)
from common import header  # noqa: E402

MIB = 2 ** 20


def _where(block) -> str:
    """The innermost frame of the block's allocation, and the innermost one inside this project."""
    frames = block.get("frames") or []
    name = lambda f: f"{Path(f['filename']).name}:{f['line']} {f['name']}"  # noqa: E731
    ours = next((name(f) for f in frames if "/mambast/" in f["filename"] or "/benchmarks/" in f["filename"]), "")
    return f"{name(frames[0])} < {ours}" if frames else "?"


def report(snapshot: list[dict], top: int, stacks: int) -> None:
    segs = collections.defaultdict(lambda: [0, 0, 0])
    live = collections.defaultdict(lambda: [0, 0])
    for seg in snapshot:
        pool = seg.get("segment_pool_id", (0, 0))
        key = ("default pool" if tuple(pool) == (0, 0) else f"graph pool {tuple(pool)}", seg["stream"],
               seg["segment_type"])
        s = segs[key]
        s[0] += 1
        s[1] += seg["total_size"]
        s[2] += seg["allocated_size"]
        for b in seg["blocks"]:
            if b["state"] == "active_allocated":
                w = live[(key[0], _where(b))]
                w[0] += 1
                w[1] += b["size"]
    print("segments (pool, stream, kind): count, reserved MiB, allocated MiB")
    for key, (n, total, alloc) in sorted(segs.items(), key=lambda kv: -kv[1][1]):
        print(f"  {key[0]:24s} stream {key[1]:#x} {key[2]:5s}: {n:4d}, {total / MIB:8.1f}, {alloc / MIB:8.1f}")
    big = sorted(((b["size"], b) for seg in snapshot for b in seg["blocks"] if b["state"] == "active_allocated"),
                 key=lambda sb: -sb[0])
    for size, b in big[:stacks]:
        print(f"live block of {size / MIB:.1f} MiB allocated at:")
        for f in (b.get("frames") or [])[:40]:
            print(f"    {f['filename']}:{f['line']} {f['name']}")
    print(f"live blocks by allocating line (top {top}): count, MiB")
    for (pool, where), (n, size) in sorted(live.items(), key=lambda kv: -kv[1][1])[:top]:
        print(f"  {pool:24s} {where[:90]:90s} {n:4d} {size / MIB:8.1f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", default="ours-compiled", choices=["ours", "ours-compiled"])
    ap.add_argument("--resolution", type=int, default=512)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--before", default="", help="comma-separated efficiency cases run first: METHOD[:BATCH]")
    ap.add_argument("--patch-conv", action="store_true",
                    help="a no-op forward hook on the patch embedding's conv (PatchEmbed then calls the conv)")
    ap.add_argument("--top", type=int, default=25, help="lines listed")
    ap.add_argument("--stacks", type=int, default=0, help="Python stacks of the N largest live blocks")
    args = ap.parse_args()
    eargs = eff.parse_args(["--resolutions", str(args.resolution), "--runs", "5", "--warmup", "3"])
    device = torch.device("cuda")
    print("# " + json.dumps(header(device, argv=sys.argv[1:])))
    torch.backends.cuda.matmul.allow_tf32 = False       # as efficiency.py
    ctx = eff.Context(eargs, device)
    for spec in filter(None, args.before.split(",")):
        method, _, batch = spec.partition(":")
        case = {"method": method, "dtype": "fp32" if method == "authors-work" else "bf16",
                "resolution": args.resolution, "batch": int(batch or 1)}
        rec = eff.run_case(ctx, case, eargs)
        print(f"before: {method} batch {case['batch']}: {rec.get('ms_per_image') or 0:.2f} ms/image, "
              f"{(rec.get('peak_mem_bytes') or 0) / MIB:.1f} MiB {rec.get('error', '')}", flush=True)
    print(f"after the cases before: allocated {torch.cuda.memory_allocated() / MIB:.1f} MiB, "
          f"reserved {torch.cuda.memory_reserved() / MIB:.1f} MiB")
    torch.cuda.memory._record_memory_history(max_entries=200_000, stacks="python")
    ctx.keep_only([("mambast", "auto", "bf16")])
    model = ctx.model("auto", "bf16")
    if args.patch_conv:
        model.patch_embed.proj.register_forward_hook(lambda *a: None)
    with torch.inference_mode():
        fn = eff.setup_ours_graph(ctx, args.resolution, args.batch, "bf16", compile=args.method == "ours-compiled")
        rec = eff.measure(fn, args.batch, device, eargs.runs, eargs.warmup)
    print(f"{args.method} bf16 {args.resolution}² batch {args.batch}: {rec['ms_per_image']:.2f} ms/image; "
          f"peak as efficiency.py counts it {rec['peak_mem_bytes'] / MIB:.1f} MiB (graph: {fn.graph}); "
          f"allocated before the call {rec['mem_before_call_bytes'] / MIB:.1f} MiB; now allocated "
          f"{torch.cuda.memory_allocated() / MIB:.1f}, reserved {torch.cuda.memory_reserved() / MIB:.1f} MiB",
          flush=True)
    report(torch.cuda.memory_snapshot(), args.top, args.stacks)
    torch.cuda.memory._record_memory_history(enabled=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
