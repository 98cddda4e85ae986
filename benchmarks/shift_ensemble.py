"""Experiment (not kept): does averaging with a stylization shifted by half a patch remove the 8-px grid?

Usage: python benchmarks/shift_ensemble.py [--pairs 8] [--size 384]
Stylizes the first N evaluation contents (style i*5, seed 0) once as they are and once shifted 4 px down and right
(reflect padding, shifted back after), and prints the grid amplitude (mambast.metrics.artifacts) and the texture
(RMS of the output minus its 5 x 5 box average, 8-bit levels) of the plain output and of the average of the two.
"""

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mambast import MambaST, stylize  # noqa: E402
from mambast.inference.geometry import resize_short_side  # noqa: E402
from mambast.io import load_image  # noqa: E402
from mambast.metrics.artifacts import grid_amplitude  # noqa: E402


def texture(y: torch.Tensor) -> float:
    return (y - F.avg_pool2d(y, 5, 1, 2, count_include_pad=False)).pow(2).mean().sqrt().item() * 255


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--eval-set", type=Path, default=Path("../shared/eval-set"))
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--size", type=int, default=384)
    args = ap.parse_args()
    contents = sorted((args.eval_set / "content").iterdir())[:args.pairs]
    styles = sorted((args.eval_set / "style").iterdir())
    model = MambaST.from_pretrained("default").eval()
    rows = []
    for i, c in enumerate(contents):
        s = str(styles[i * 5 % len(styles)])
        x = torch.from_numpy(np.array(load_image(c))).permute(2, 0, 1)[None].float() / 255
        x = resize_short_side(x, args.size).clamp(0, 1)
        H, W = x.shape[2:]
        with torch.inference_mode():
            y0 = stylize(x, s, model=model, size=None, seed=0, output_type="pt").clamp(0, 1)
            xs = F.pad(x, (4, 4, 4, 4), mode="reflect")[..., :H + 8, :W + 8]
            y1 = stylize(xs, s, model=model, size=None, seed=0, output_type="pt").clamp(0, 1)[..., 4:4 + H, 4:4 + W]
        ya = (y0 + y1) / 2
        rows.append((grid_amplitude(y0[0]).item(), grid_amplitude(ya[0]).item(), texture(y0), texture(ya)))
        print(c.name, Path(s).name, " ".join(f"{v:.2f}" for v in rows[-1]), flush=True)
    print("mean grid plain, averaged; texture plain, averaged:", np.mean(rows, 0).round(2))


if __name__ == "__main__":
    main()
