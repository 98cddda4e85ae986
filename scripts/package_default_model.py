"""Package trained weights as the bundled default model: int8 per output channel, checked against float32.

Usage: python scripts/package_default_model.py MODEL_DIR [--out mambast/assets/default]
MODEL_DIR is a save_pretrained folder (e.g. from scripts/remote/merge.py). Writes model.safetensors (int8 +
float32 scales), config.json and quantization.json (the measured output difference) into --out, and
refuses to write when the int8 model's stylized output differs from float32 by 2 % or more.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MAX_REL_DIFF = 0.02


def output_difference(ref, quant, pairs, size: int = 256) -> float:
    """Largest relative L2 difference of the stylized outputs over the given (content, style) pairs."""
    from mambast.inference.stylizer import stylize_tensor
    worst = 0.0
    for c, s in pairs:
        a = stylize_tensor(ref, c, s, size=size, seed=0)
        b = stylize_tensor(quant, c, s, size=size, seed=0)
        worst = max(worst, ((a - b).norm() / a.norm()).item())
    return worst


def main(argv=None) -> int:
    from mambast.examples import stroke_painting
    from mambast.io import pil_to_tensor
    from mambast.model import MambaST
    from mambast.weights import load_pretrained, save_pretrained

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", type=Path)
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "mambast" / "assets" / "default")
    args = p.parse_args(argv)
    ref = MambaST.from_pretrained(args.model)
    tmp = args.out.with_name(args.out.name + ".tmp")
    save_pretrained(ref, tmp, quantize=True)
    quant = load_pretrained(tmp)
    g = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 12, generator=g), size=(192, 288), mode="bicubic")
    pairs = [(smooth.clamp(0, 1), pil_to_tensor(stroke_painting(256, seed=1))),
             (pil_to_tensor(stroke_painting(256, seed=2)), torch.rand(1, 3, 256, 256, generator=g))]
    diff = output_difference(ref, quant, pairs)
    print(f"int8 vs float32 stylized output: max relative L2 difference {diff:.4f} over {len(pairs)} pairs")
    if diff >= MAX_REL_DIFF:
        print(f"refused: difference must be below {MAX_REL_DIFF}", file=sys.stderr)
        return 1
    info = {"format": "int8 per output channel (float32 scales) for matrices and conv kernels >= 4096 values; "
                      "float32 for the rest", "max_rel_output_diff_vs_float32": round(diff, 5),
            "pairs": len(pairs), "working_size": 256}
    training = args.model / "training.json"
    if training.exists():
        info["training"] = json.loads(training.read_text())
        cfg = info["training"].get("train_config", {})
        for key in ("content", "style", "out", "vgg", "init"):  # keep folder names, not machine paths
            if cfg.get(key):
                cfg[key] = Path(cfg[key]).name
    (tmp / "quantization.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    if args.out.exists():
        for f in args.out.iterdir():
            f.unlink()
        args.out.rmdir()
    tmp.rename(args.out)
    size = sum(f.stat().st_size for f in args.out.iterdir())
    print(f"wrote {args.out} ({size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
