"""A training forward and backward through torch.compile against the eager one (CUDA machine, repository root).

One model (seeded random weights, or --model), one batch of random images, no random draws (eval mode, no style
shuffle), the model's forward with identities under bf16 autocast as in training (the loss network left out: a
fixed random weighting of the outputs stands in for the loss). Prints, per model part, the gradient norms of the
eager and the compiled step and their relative difference, with an eager float32 step (no autocast) beside them as
the scale of bf16 rounding; then the memory held between forward and backward and the scan kernels launched per
step. Exit code 1 when a part's compiled gradient is missing or zero where the eager one is not, or differs from it
by more than 0.3 and more than twice the bf16 scale plus 0.02, or is not finite (the compiled step that lost the
scan's states and dB, dC had its Mamba layers and patch embedding 0.34-1.0 off; the corrected one 0.12-0.14 at 128²).

    python benchmarks/compile_check.py                          # 2 pairs at 128², identities as the trainer's
    python benchmarks/compile_check.py --size 256 --batch 8     # a training step's shapes
    python benchmarks/compile_check.py --out DIR                # also DIR/compile-check.json
    python benchmarks/compile_check.py --device cpu --config tiny --size 32   # a smoke test on the CPU
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path

import torch
from common import header, write_json

GIB = 2 ** 30
OFF_FLOOR = 0.3   # relative difference a part may always have before it counts as off


def part_of(name: str) -> str:
    """encoder_c.layers.0.x -> encoder_c.layers.0; cnn_decoder.x -> cnn_decoder."""
    keys = name.split(".")
    return ".".join(keys[:3]) if keys[0] in ("encoder_c", "encoder_s", "decoder") and len(keys) > 3 else keys[0]


def is_off(row: dict) -> bool:
    """A part whose compiled gradient is missing, zero or not finite where the eager one is not, or too far from it."""
    if not row["eager_norm"]:
        return False
    if not row["compiled_norm"] or not math.isfinite(row["compiled_norm"]) or row["compiled_vs_eager"] is None:
        return True
    return not row["compiled_vs_eager"] <= max(OFF_FLOOR, 2 * (row["bf16_vs_fp32"] or 0) + 0.02)


def fmt(v) -> str:
    return f"{v:.3e}" if v is not None else "none"


def allocated(device: torch.device) -> int:
    if device.type != "cuda":
        return 0
    torch.cuda.synchronize(device)
    return torch.cuda.memory_allocated(device)


def step(model, forward, c, s, w, amp: bool) -> tuple[dict, float]:
    """Per-part gradients of one forward + backward, and the memory the forward left allocated (GiB)."""
    model.zero_grad(set_to_none=True)
    before = allocated(c.device)
    with torch.autocast(c.device.type, dtype=torch.bfloat16, enabled=amp):
        out = forward(c, s, identities=True)
    held = (allocated(c.device) - before) / GIB
    (out.float() * w).mean().backward()
    parts: dict[str, list] = {}
    for name, p in model.named_parameters():
        if p.grad is not None:
            parts.setdefault(part_of(name), []).append(p.grad.detach().float().flatten())
    return {k: torch.cat(v) for k, v in parts.items()}, held


def scan_launches(model, forward, c, s, w) -> dict:
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step(model, forward, c, s, w, True)
        allocated(c.device)
    counts: dict[str, int] = {}
    for e in prof.events():
        if e.name.startswith("_scan_"):
            counts[e.name] = counts.get(e.name, 0) + 1
    return counts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128, help="image side (a multiple of 8)")
    ap.add_argument("--batch", type=int, default=2, help="content-style pairs")
    ap.add_argument("--model", default="", help="a save_pretrained folder (default: seeded random weights)")
    ap.add_argument("--config", default="default", help="model config without --model: 'default' or 'tiny'")
    ap.add_argument("--device", default="cuda", help="cuda, or cpu (a smoke test: the CPU scan, no memory figures)")
    ap.add_argument("--out", type=Path, default=None, help="folder for compile-check.json")
    args = ap.parse_args()
    if args.size < 8 or args.size % 8 or args.batch < 1:
        ap.error("--size must be a positive multiple of 8 and --batch at least 1")
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: pass --device cpu for a smoke test", file=sys.stderr)
        return 2
    from mambast.model import MambaST
    from mambast.train.config import model_config

    torch.manual_seed(0)
    model = MambaST.from_pretrained(args.model) if args.model else MambaST(model_config(args.config))
    model.config = dataclasses.replace(model.config, shuffle=False)
    model = model.to(dev).eval()
    g = torch.Generator(device=dev).manual_seed(1)
    shape = (args.batch, 3, args.size, args.size)
    c, s = torch.rand(shape, device=dev, generator=g), torch.rand(shape, device=dev, generator=g)
    w = torch.randn((3 * args.batch, 3, args.size, args.size), device=dev, generator=g)

    fp32, _ = step(model, model, c, s, w, amp=False)
    eager, held_eager = step(model, model, c, s, w, amp=True)
    compiled_model = torch.compile(model)
    step(model, compiled_model, c, s, w, amp=True)                     # compiles
    compiled, held_compiled = step(model, compiled_model, c, s, w, amp=True)

    def rel(a, b):
        return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()

    rows = []
    print(f"{'part':22s} {'|eager|':>10s} {'|compiled|':>10s} {'compiled vs eager':>18s} {'eager bf16 vs fp32':>19s}")
    for part in sorted(set(eager) | set(compiled)):
        e, k = eager.get(part), compiled.get(part)
        row = {"part": part, "eager_norm": e.norm().item() if e is not None else None,
               "compiled_norm": k.norm().item() if k is not None else None,
               "compiled_vs_eager": rel(k, e) if e is not None and k is not None else None,
               "bf16_vs_fp32": rel(e, fp32[part]) if e is not None and part in fp32 else None}
        rows.append(row)
        print(f"{part:22s} {fmt(row['eager_norm']):>10s} {fmt(row['compiled_norm']):>10s} "
              f"{fmt(row['compiled_vs_eager']):>18s} {fmt(row['bf16_vs_fp32']):>19s}")
    launches = {} if dev.type != "cuda" else {"eager": scan_launches(model, model, c, s, w),
                                              "compiled": scan_launches(model, compiled_model, c, s, w)}
    bad = [r["part"] for r in rows if is_off(r)]
    if dev.type == "cuda":
        print(f"held between forward and backward: eager {held_eager:.2f} GiB, compiled {held_compiled:.2f} GiB")
        print(f"scan launches per step: {launches}")
    print("parts off: " + (", ".join(bad) if bad else "none"))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        write_json(args.out / "compile-check.json",
                   [{"header": header(dev, size=args.size, batch=args.batch, model=args.model or "random")},
                    {"parts": rows, "parts_off": bad,
                     "held_gib": {"eager": held_eager, "compiled": held_compiled} if dev.type == "cuda" else None,
                     "scan_launches": launches}])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
