"""End-to-end images/s of folder stylization (decode + stylize + encode PNG + write), old loop vs the pipeline.

Usage: python benchmarks/folder.py [--device cuda] [--contents 8 --styles 8 --size 512] [--out DIR]
Random-weight reference model (speed does not depend on values) unless --model; synthetic JPEG inputs
(smooth random colour fields) written to a temporary folder, every content x every style. Modes:
  per-pair            the loop `mambast stylize` ran before the pipeline: for each pair decode both images,
                      `stylize_tensor`, encode and write the PNG, one after another
  pipeline b1 plain   `PairStylizer`, batch 1, no token caches, no CUDA graphs (decode/write overlap only)
  pipeline bN         `PairStylizer` as `mambast stylize` runs it: batch N, content/style token caches, CUDA
                      graphs on CUDA
  pipeline bN compiled  the same with `--compile` (only with --compile)
With --dtype the Linear and Conv2d weights are stored in that dtype, as `mambast stylize` does (same results).
per-pair runs once untimed on a few pairs first. A pipeline mode runs twice untimed on all pairs with the
stylizer it is then timed with, so that every call shape is compiled (first call) and captured in a CUDA
graph (second call), then, its caches cleared, timed on all pairs. "first run" in the output and the JSON
is the first of those runs: it includes torch.compile's compiling (and whatever an earlier mode's compiling
left in torch's caches: compiled modes after the first compile less).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common import header, write_json  # noqa: E402  (benchmarks/common.py; puts the repository on sys.path)

from mambast.config import MambaSTConfig  # noqa: E402
from mambast.inference.config import autocast_dtype  # noqa: E402
from mambast.inference.precision import cast_autocast_weights  # noqa: E402
from mambast.inference.stylizer import stylize_tensor  # noqa: E402
from mambast.io import load_image, pil_to_tensor, save_image, tensor_to_pil  # noqa: E402
from mambast.model import MambaST  # noqa: E402
from mambast.inference.jobs import Job  # noqa: E402
from mambast.inference.stylizer import Stylizer as PairStylizer  # noqa: E402


def make_images(folder: Path, n: int, size: int, seed: int) -> list[Path]:
    from PIL import Image
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        small = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
        noise = rng.integers(-20, 20, (size, size, 3))
        img = np.asarray(Image.fromarray(small).resize((size, size), Image.BICUBIC)).astype(int) + noise
        paths.append(folder / f"img{i:03d}.jpg")
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(paths[-1], quality=92)
    return paths


def per_pair(model, jobs, amp, size):
    for j in jobs:
        y = stylize_tensor(model, pil_to_tensor(load_image(j.content)), pil_to_tensor(load_image(j.style)),
                           size=size, seed=0, autocast_dtype=amp)
        save_image(tensor_to_pil(y), j.output)


def pipeline(model, amp, size, **kw):
    """A function running jobs through one `PairStylizer`, each time from cold caches."""
    stylizer = PairStylizer(model, size=size, seed=0, autocast_dtype=amp, **kw)

    def run(jobs):
        stylizer.clear_caches()
        for _, error in stylizer.run(jobs):
            if error is not None:
                raise error
        return dict(stylizer.stats)
    return run


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--model", default=None, help="a model (default: random reference-size weights)")
    ap.add_argument("--contents", type=int, default=8)
    ap.add_argument("--styles", type=int, default=8)
    ap.add_argument("--size", type=int, default=512, help="side of the synthetic square images")
    ap.add_argument("--batch-sizes", default="8,16", help="batch sizes of the full pipeline")
    ap.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--tiny", action="store_true", help="tiny model (smoke test)")
    ap.add_argument("--compile", action="store_true", help="also time the pipeline with --compile")
    ap.add_argument("--out", default=None, help="folder for folder.json")
    ap.add_argument("--commit", default=None, help="git commit to record (default: git rev-parse HEAD)")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    if args.model:
        model = MambaST.from_pretrained(args.model)
    else:
        cfg = (MambaSTConfig(dim=32, depth_encoder=1, depth_decoder=1, d_state=4, decoder_channels=[16, 8, 8])
               if args.tiny else MambaSTConfig())
        model = MambaST(cfg).eval()
    amp = autocast_dtype(args.dtype, args.device)
    model = cast_autocast_weights(model, amp, args.device)   # cast, then moved: as `mambast stylize`
    tmp = Path(tempfile.mkdtemp(prefix="mambast-folder-"))
    try:
        contents = make_images(tmp / "content", args.contents, args.size, 0)
        styles = make_images(tmp / "style", args.styles, args.size, 1)
        n = len(contents) * len(styles)
        # (name, make: () -> run(jobs), warm-up on all pairs)
        modes = [("per-pair", lambda: lambda jobs: per_pair(model, jobs, amp, args.size), False),
                 ("pipeline b1 plain", lambda: pipeline(model, amp, args.size, batch_size=1, cache_bytes=0,
                                                        cuda_graphs=False), True)]
        for b in [int(x) for x in args.batch_sizes.split(",") if x.strip()]:
            modes.append((f"pipeline b{b}", lambda b=b: pipeline(model, amp, args.size, batch_size=b), True))
            if args.compile:
                modes.append((f"pipeline b{b} compiled",
                              lambda b=b: pipeline(model, amp, args.size, batch_size=b, compile=True), True))
        sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
        records = []
        for name, make, warm_all in modes:
            run = make()
            out = tmp / "out" / name.replace(" ", "_")
            grid = [(c, s) for c in contents for s in styles]
            warm = [Job(c, s, out / "warm" / f"{c.stem}_{s.stem}.png") for c, s in (grid if warm_all else grid[:4])]
            t = time.perf_counter()
            run(warm)
            sync()
            first = time.perf_counter() - t
            if warm_all:
                run(warm)             # a CUDA graph is captured on a shape's second call (`mambast.inference.graphs`)
            jobs = [Job(c, s, out / f"{c.stem}_stylized_{s.stem}.png") for c, s in grid]
            t = time.perf_counter()
            stats = run(jobs)
            sync()
            seconds = time.perf_counter() - t
            assert all(j.output.exists() for j in jobs)
            records.append({"mode": name, "pairs": n, "seconds": seconds, "images_per_s": n / seconds,
                            "first_run_seconds": first, "first_run_pairs": len(warm),
                            "stats": stats})
            print(f"{name:22s} {n / seconds:8.1f} images/s ({seconds:.2f} s for {n} pairs; first run "
                  f"{first:.2f} s) {stats or ''}", flush=True)
        base = records[0]["images_per_s"]
        for r in records:
            r["speedup_vs_per_pair"] = r["images_per_s"] / base
        print("speed-up over per-pair: " + ", ".join(f"{r['mode']} {r['speedup_vs_per_pair']:.2f}x" for r in records))
        head = header(args.device, args.commit, size=args.size, contents=args.contents, styles=args.styles,
                      dtype=args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32"))
        if args.out:
            write_json(Path(args.out) / "folder.json", {"header": head, "records": records})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
