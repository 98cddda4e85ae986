"""Package trained weights as the bundled default model: int8 per output channel, checked against float32.

Usage: python scripts/package_default_model.py MODEL_DIR [--out mambast/assets/default]
       [--commit SHA] [--previous DIR]
MODEL_DIR is a save_pretrained folder (e.g. from scripts/remote/merge.py). Writes model.safetensors (int8 +
float32 scales), config.json, quantization.json (the measured output difference) and, when MODEL_DIR has the
trainer's training.json, training.json into --out: {"training": {"iterations", "batch_size", "samples_seen",
"git_commit", "runs": [...]}}, one run per stretch of training. A run that started from other weights
(`mambast train --init`) needs --previous, the packaged model it started from, whose runs are carried over.
Refuses to write when the int8 model's stylized output differs from float32 by 2 % or more.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MAX_REL_DIFF = 0.02
PATH_KEYS = ("content", "style", "out", "vgg", "init")   # keep folder names, not machine paths


def _run(train: dict, start: int, commit: str | None) -> dict:
    """One stretch of training from a trainer's training.json (step, train_config, world_size)."""
    cfg = {k: (Path(v).name if k in PATH_KEYS and v else v) for k, v in train.get("train_config", {}).items()}
    batch, processes = int(cfg.get("batch_size", 8)), int(train.get("world_size", 1))
    return {"steps": [start, int(train["step"])], "batch_size": batch, "processes": processes,
            "samples": (int(train["step"]) - start) * batch * processes, "git_commit": commit,
            "source": train.get("source"), "train_config": cfg}


def previous_runs(folder: Path) -> list[dict]:
    """The runs recorded with a packaged model (training.json; older packages kept one run in quantization.json)."""
    if (folder / "training.json").exists():
        return json.loads((folder / "training.json").read_text())["training"]["runs"]
    legacy = json.loads((folder / "quantization.json").read_text()).get("training")
    if legacy is None:
        raise ValueError(f"{folder} records no training")
    return [_run(legacy, 0, None)]


def training_record(train: dict, commit: str | None = None, runs_before: list[dict] | None = None) -> dict:
    """The shipped record: totals over every run, the latest run's commit, and the runs themselves."""
    start = int(train.get("train_config", {}).get("init_step", 0))
    runs = list(runs_before or [])
    end_before = runs[-1]["steps"][1] if runs else 0
    if start != end_before:
        raise ValueError(f"the run starts at step {start} but the runs before it end at step {end_before}"
                         + ("" if runs else ": pass --previous, the model it was started from"))
    runs.append(_run(train, start, commit))
    last = runs[-1]
    return {"iterations": last["steps"][1], "batch_size": last["batch_size"],
            "samples_seen": sum(r["samples"] for r in runs), "git_commit": commit, "runs": runs}


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
    p.add_argument("--commit", default=None, help="git commit of the code that trained MODEL_DIR")
    p.add_argument("--previous", type=Path, default=None,
                   help="the packaged model this run started from (mambast train --init); its runs are carried over")
    args = p.parse_args(argv)
    record = None
    if (args.model / "training.json").exists():
        train = json.loads((args.model / "training.json").read_text())
        try:
            record = training_record(train, args.commit, previous_runs(args.previous) if args.previous else None)
        except (ValueError, KeyError, OSError) as e:
            p.error(f"training record: {e}")
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
    (tmp / "quantization.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    if record is not None:
        (tmp / "training.json").write_text(json.dumps({"training": record}, indent=2, sort_keys=True) + "\n")
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
