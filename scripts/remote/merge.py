"""Rebuild what export.py wrote: an fp32 save_pretrained folder, and the checkpoint when it came back too.

Usage: python scripts/remote/merge.py EXPORT_DIR --out MODEL_DIR
Writes MODEL_DIR (config.json + model.safetensors + training.json). With EXPORT_DIR/checkpoint/ present, the
weights come from the checkpoint (fp32, exact) and the checkpoint itself is written as MODEL_DIR/checkpoint.pt:
`python -m mambast.train ... --resume MODEL_DIR/checkpoint.pt` continues exactly (weights, optimizer state,
data position). Without it the weights come from the bf16 shards, and `--init MODEL_DIR --init-step STEP`
continues from them with a fresh optimizer.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[1])]   # shards.py, chunks.py; the repository's mambast

from chunks import unpack  # noqa: E402
from export import CHECKPOINT_DIR, CHECKPOINT_NAME  # noqa: E402
from shards import read_shards  # noqa: E402


def merge(src: Path, out: Path) -> dict:
    """Write the model folder (and checkpoint.pt when it came back); returns training.json's content."""
    from mambast.config import MambaSTConfig
    from mambast.model import MambaST
    from mambast.train.checkpoint import load_checkpoint
    state, manifest = read_shards(src)
    info = {k: manifest[k] for k in ("step", "source", "train_config", "world_size") if k in manifest}
    out.mkdir(parents=True, exist_ok=True)
    if (src / CHECKPOINT_DIR).is_dir():
        with tempfile.TemporaryDirectory(dir=out) as tmp:
            unpack(src / CHECKPOINT_DIR, tmp)
            shutil.move(str(Path(tmp) / CHECKPOINT_NAME), out / CHECKPOINT_NAME)
        config = MambaSTConfig.from_dict(manifest["model_config"])   # bounds what the checkpoint may hold
        state = load_checkpoint(out / CHECKPOINT_NAME, config)["model"]
        info["checkpoint"] = CHECKPOINT_NAME
    model = MambaST(MambaSTConfig.from_dict(manifest["model_config"]))
    model.load_state_dict(state, strict=True)
    model.save_pretrained(out)
    (out / "training.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    return info


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("src", type=Path, help="what export.py wrote (weights-*.safetensors, manifest.json, checkpoint/)")
    p.add_argument("--out", type=Path, required=True, help="save_pretrained folder to write")
    args = p.parse_args(argv)
    info = merge(args.src, args.out)
    step = info.get("step", "?")
    if "checkpoint" in info:
        print(f"wrote {args.out} and {args.out / CHECKPOINT_NAME} (step {step}); continue exactly with "
              f"--resume {args.out / CHECKPOINT_NAME}")
    else:
        print(f"wrote {args.out} (step {step}, weights only); continue with --init {args.out} --init-step {step} "
              f"(the optimizer starts afresh)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
