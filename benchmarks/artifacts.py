"""Token-grid and border artefacts of a model's outputs (`mambast.metrics.artifacts`), against the contents'.

Usage: python benchmarks/artifacts.py --content DIR --style DIR [--model MODEL] [--pairs N] [--margins 0,16,32]
       --out FILE.json
Stylizes the first N contents (sorted) each with one style (round robin, sorted) at --size, seed 0, once per
--margins value (`StylizeConfig.margin`), and reports the mean and the 90th percentile of `grid_amplitude` and
`border_step` (8-bit grey levels) over the outputs of each margin and over the contents at the same working size
(what a pattern-free picture scores).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from common import header, write_json  # benchmarks/common.py; puts the repository on sys.path

SUFFIXES = {".jpg", ".jpeg", ".png"}


def summary(values: list[float]) -> dict:
    t = torch.tensor(values)
    return {"mean": round(t.mean().item(), 3), "p90": round(t.quantile(0.9).item(), 3)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--content", type=Path, required=True)
    ap.add_argument("--style", type=Path, required=True)
    ap.add_argument("--model", default="default", help="model folder (default: the bundled model)")
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--device", default=None)
    ap.add_argument("--margins", default="0", help="comma-separated margins to compare (default: 0)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    from mambast import MambaST, stylize
    from mambast.inference.config import default_device
    from mambast.inference.geometry import resize_short_side
    from mambast.io import load_image
    from mambast.metrics.artifacts import border_step, grid_amplitude

    try:
        margins = [int(m) for m in args.margins.split(",")]
    except ValueError:
        ap.error(f"--margins must be comma-separated integers; got {args.margins!r}")
    contents = sorted(p for p in args.content.iterdir() if p.suffix.lower() in SUFFIXES)[:args.pairs]
    styles = sorted(p for p in args.style.iterdir() if p.suffix.lower() in SUFFIXES)
    if not contents or not styles:
        print("no images found", file=sys.stderr)
        return 1
    device = args.device or default_device()
    model = MambaST.from_pretrained(args.model, device=device).eval()
    rows, t0 = [], time.perf_counter()
    for i, c in enumerate(contents):
        s = styles[i % len(styles)]
        content = resize_short_side(torch.from_numpy(np.asarray(load_image(c))).permute(2, 0, 1)
                                    [None].float() / 255, args.size).clamp(0, 1)
        row = {"content": c.name, "style": s.name, "grid_content": grid_amplitude(content[0]).item(),
               "border_content": border_step(content[0]).item(), "grid": {}, "border": {}}
        for m in margins:
            with torch.inference_mode():
                y = stylize(content, str(s), model=model, size=None, seed=0, margin=m,
                            output_type="pt").cpu().clamp(0, 1)
            row["grid"][m], row["border"][m] = grid_amplitude(y[0]).item(), border_step(y[0]).item()
        rows.append(row)
        print(f"[{i + 1}/{len(contents)}] {c.name} x {s.name}: grid " +
              ", ".join(f"{row['grid'][m]:.2f}" for m in margins) + f" (content {row['grid_content']:.2f}), border " +
              ", ".join(f"{row['border'][m]:.2f}" for m in margins) + f" (content {row['border_content']:.2f}); "
              f"margins {args.margins}", file=sys.stderr, flush=True)
    result = {"header": header(device), "weights": args.model, "size": args.size, "pairs": len(rows), "device": str(device),
              "seconds": round(time.perf_counter() - t0, 1),
              "margins": margins,
              "grid_amplitude": {"contents": summary([r["grid_content"] for r in rows]),
                                 **{f"outputs_margin_{m}": summary([r["grid"][m] for r in rows]) for m in margins}},
              "border_step": {"contents": summary([r["border_content"] for r in rows]),
                              **{f"outputs_margin_{m}": summary([r["border"][m] for r in rows]) for m in margins}},
              "rows": rows}
    write_json(args.out, result)
    print(json.dumps({k: result[k] for k in ("grid_amplitude", "border_step")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
