"""How closely the bundled model reconstructs a content at strength 0 (the content fused with itself).

Usage: python scripts/strength0_reconstruction.py [--model DIR] [--sizes 96,256] [--eval-content DIR] [--eval-count 4]
Prints the mean absolute difference (0..1, over pixels and channels, at the content's own size) between
`mambast.stylize(content, style, strength=0, size=S)` and the content, per working size S: for the example cat
photo, the three example photos of docs/controls.md (cat, coffee, astronaut) and, with --eval-content, the first
--eval-count images of that folder (sorted by name). The style does not matter at strength 0.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def mad(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).mean() / 255.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="a model folder (default: the bundled model)")
    ap.add_argument("--sizes", default="96,256", help="comma-separated working sizes")
    ap.add_argument("--eval-content", default="", help="a folder of further content images")
    ap.add_argument("--eval-count", type=int, default=4)
    args = ap.parse_args()

    import mambast
    from mambast.examples import stroke_painting
    from mambast.io import load_image
    from make_controls_images import example_images

    contents, _ = example_images()
    groups = {"cat": {"cat": contents["cat"]}, "three example photos": contents}
    if args.eval_content:
        files = sorted(p for p in Path(args.eval_content).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        groups[f"first {args.eval_count} of {args.eval_content}"] = {
            p.name: load_image(p) for p in files[:args.eval_count]}
    style = stroke_painting(seed=0)
    for size in (int(s) for s in args.sizes.split(",")):
        for group, images in groups.items():
            values = [mad(mambast.stylize(img, style, args.model, strength=0, size=size, seed=0), img) for img in images.values()]
            print(f"size {size}: {group}: {np.mean(values):.3f} ({', '.join(f'{v:.3f}' for v in values)})")


if __name__ == "__main__":
    main()
