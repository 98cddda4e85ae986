"""Training throughput of `mambast train` on one GPU: images per second at 256² crops, per configuration.

Usage (CUDA machine, repository root on PYTHONPATH):
    python benchmarks/train_speed.py --out DIR [--content C --style S] [--methods eager,compiled] [--profile]
Each configuration runs the real trainer (`mambast.train.train`, data loading included) for --warmup + --steps
steps and reads images/s from its log after the warm-up; peak GPU memory from the same process. Without
--content/--style it trains on generated JPEG noise images (same sizes and decode cost as the training set).
The loss network is a randomly initialised VGG-19 (same cost as the normalised one; no download).
Writes DIR/train-speed.json: a header record (with "gflop_per_image", `training_gflop_per_image`), then one record
per configuration {"method", "batch", "resolution", "images_per_s", "tflop_per_s", "peak_mem_bytes", "dtype"};
exits 1 if any run failed.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from pathlib import Path

import torch

from common import header, write_json  # benchmarks/common.py; puts the repository on sys.path

# method -> TrainConfig overrides
METHODS = {
    "eager": dict(compile=False),
    "compiled": dict(compile=True),       # the model through torch.compile
}


def make_images(folder: Path, n: int, seed: int) -> None:
    """n random-noise JPEGs of 256 x 384 (the training set's short side, at its largest aspect)."""
    import numpy as np
    from PIL import Image
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (256, 384, 3), dtype=np.uint8)).save(folder / f"{i:04d}.jpg", quality=85)


def images_per_s(log: Path, warmup: int, batch: int) -> float:
    """Mean images/s over the log rows after the warm-up (each row: it/s over its last log_every steps)."""
    with open(log, newline="") as f:
        rows = [r for r in csv.DictReader(f) if int(r["step"]) > warmup]
    if not rows:
        raise RuntimeError(f"{log}: no rows after step {warmup}")
    seconds = sum(1.0 / float(r["it_per_s"]) for r in rows)     # equal steps per row: harmonic mean of it/s
    return batch * len(rows) / seconds


@torch.no_grad()
def _forward_flops(module, *inputs, **kw) -> int:
    from torch.utils.flop_counter import FlopCounterMode
    counter = FlopCounterMode(display=False)
    with counter:
        module(*inputs, **kw)
    return counter.get_total_flops()


def training_gflop_per_image(resolution: int) -> float:
    """Matmul and convolution GFLOPs of one training sample (a content-style pair), counted on the meta device:
    the model's forward (stylization and both identities) times 3 (its backward costs two forwards), the loss
    network's forward over 5 images (targets and outputs) and its backward to the 3 outputs (about one forward
    each; its weights take no gradient). Forwards are counted, not backwards: the counter ignores the groups
    of SS2D's depthwise convolution in its backward and would count it 1024-fold. The scan's contractions are
    the reference scan's (about 3 % of the model's forward); element-wise work is not counted. Every counted
    operation works per pixel or per token, so the count is made at 64² and scaled by the pixel count."""
    from mambast import ops
    from mambast.config import MambaSTConfig
    from mambast.model import MambaST
    from mambast.networks.vgg import VGG19Features

    with torch.device("meta"):
        model, vgg = MambaST(MambaSTConfig()).train(), VGG19Features()
        x = torch.empty(1, 3, 64, 64)
        perms = torch.zeros(model.config.depth_decoder, (64 // model.config.patch_size) ** 2, dtype=torch.long)
    with ops.use_impl("ref"):
        model_fwd = _forward_flops(model, x, x, identities=True, perms=perms)
    return (3 * model_fwd + (5 + 3) * _forward_flops(vgg, x)) / 1e9 * (resolution / 64) ** 2


def profile_step(args) -> int:
    """--profile records steps N + 1 .. N + 3 with N chosen so that they end before the first timed log row, which
    may begin up to --log-every steps before the warm-up's end."""
    return args.warmup - args.log_every - 3


def run_one(method: str, batch: int, args, content: str, style: str, work: Path, gflop: float) -> dict:
    from mambast.networks.vgg import VGG19Features
    from mambast.train import TrainConfig, train

    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    out = work / f"{method}-b{batch}"
    cfg = TrainConfig(content=content, style=style, out=str(out), batch_size=batch, crop=args.resolution,
                      steps=args.warmup + args.steps, log_every=args.log_every, ckpt_every=0, sample_every=0,
                      progress=False, print_every=10 ** 9, workers=args.workers, seed=0,
                      profile=profile_step(args) if args.profile else 0, **METHODS[method])
    code = train(cfg, vgg=VGG19Features())
    if code:
        raise RuntimeError(f"trainer exited with {code}")
    if args.profile:
        (out / "profile.txt").replace(args.out / f"train-profile-{method}-b{batch}.txt")
    ips = images_per_s(out / "log.csv", args.warmup, batch)
    return {"method": method, "batch": batch, "resolution": args.resolution, "images_per_s": round(ips, 2),
            "tflop_per_s": round(ips * gflop / 1e3, 1), "peak_mem_bytes": int(torch.cuda.max_memory_allocated()),
            "dtype": "bf16 autocast"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for train-speed.json")
    ap.add_argument("--content", default="", help="content image folder (default: generated images)")
    ap.add_argument("--style", default="", help="style image folder (default: generated images)")
    ap.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated among {', '.join(METHODS)}")
    ap.add_argument("--batches", default="8,32", help="comma-separated batch sizes (content and style each)")
    ap.add_argument("--resolution", type=int, default=256, help="training crop side")
    ap.add_argument("--warmup", type=int, default=30, help="steps before timing (compilation, cuDNN autotuning)")
    ap.add_argument("--steps", type=int, default=60, help="timed steps")
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--workers", type=int, default=6, help="data loader processes per stream")
    ap.add_argument("--profile", action="store_true", help="also write DIR/train-profile-METHOD-bBATCH.txt: "
                    "torch.profiler's table of 3 steps near the end of the warm-up (`mambast train --profile`)")
    ap.add_argument("--commit", default="", help="commit to record in the header (default: the checkout's)")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("train_speed.py needs a CUDA device", file=sys.stderr)
        return 1
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        ap.error(f"unknown methods: {', '.join(unknown)}")
    if args.profile and profile_step(args) < 1:
        ap.error("--profile needs --warmup >= --log-every + 4 (the profiled steps stay out of the timed rows)")
    args.out.mkdir(parents=True, exist_ok=True)
    gflop = training_gflop_per_image(args.resolution)
    head = header("cuda", args.commit or None, warmup_steps=args.warmup, timed_steps=args.steps,
                  data="given folders" if args.content else "generated 256x384 JPEG noise",
                  gflop_per_image=round(gflop, 1))
    records, failed = [{"header": head}], False
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        content, style = args.content, args.style
        if not content or not style:
            make_images(work / "content", 64, 0)
            make_images(work / "style", 64, 1)
            content, style = content or str(work / "content"), style or str(work / "style")
        for batch in (int(b) for b in args.batches.split(",")):
            for method in methods:
                try:
                    rec = run_one(method, batch, args, content, style, work, gflop)
                except Exception as e:  # out of memory or a compile failure: record it, go on
                    rec = {"method": method, "batch": batch, "resolution": args.resolution, "error": str(e)[:300]}
                    failed = True
                print(json.dumps(rec), flush=True)
                records.append(rec)
                write_json(args.out / "train-speed.json", records)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
