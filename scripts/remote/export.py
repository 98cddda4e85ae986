"""Export a training run in pieces of at most N MiB: the model weights, and the whole checkpoint if it fits.

Usage: python scripts/remote/export.py RUN_OUT OUTPUT_DIR --chunk-mib N [--max-mib M]
RUN_OUT is the trainer's --out folder. OUTPUT_DIR receives the newest checkpoint's weights as bf16 shards
(weights-*.safetensors + manifest.json, each shard at most N MiB), log.csv and samples-latest.png when the run
has them, and, when everything stays within M MiB (no limit without --max-mib), the checkpoint file itself
(fp32 weights, optimizer state, data position) as chunks in OUTPUT_DIR/checkpoint/. merge.py undoes this.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parents[1])]   # shards.py, chunks.py; the repository's mambast

from chunks import MIB, pack  # noqa: E402
from shards import write_shards  # noqa: E402

CHECKPOINT_DIR = "checkpoint"      # the checkpoint's chunks, inside the output folder
CHECKPOINT_NAME = "checkpoint.pt"  # its name inside those chunks


def export(run_out: Path, dest: Path, chunk_mib: float, max_mib: float | None = None) -> dict:
    """Write the pieces into `dest`; returns what was written ({"step", "shards", "checkpoint", "files"})."""
    from mambast.train.checkpoint import list_checkpoints, load_checkpoint, recorded_model_config
    ckpts = list_checkpoints(run_out / "checkpoints")
    if ckpts:   # the run's model config bounds what its checkpoint may hold
        ckpt = load_checkpoint(ckpts[-1], recorded_model_config(run_out))
        state, info = ckpt["model"], {"model_config": ckpt["model_config"], "step": ckpt["step"],
                                      "train_config": ckpt["train_config"], "source": ckpts[-1].name,
                                      "world_size": int(ckpt.get("world_size", 1))}
    elif (run_out / "model").is_dir():
        from mambast.model import MambaST
        model = MambaST.from_pretrained(run_out / "model")
        state, info = model.state_dict(), {"model_config": model.config.to_dict(), "source": "model/"}
    else:
        raise FileNotFoundError(f"nothing to export: no checkpoints or model/ in {run_out}")
    shards = write_shards(state, dest, max_bytes=int(chunk_mib * MIB), info=info)
    files = []
    for src, name in ((run_out / "log.csv", "log.csv"), (run_out / "samples" / "latest.png", "samples-latest.png")):
        if src.is_file():
            files.append(Path(shutil.copy2(src, dest / name)))
    used = sum(p.stat().st_size for p in shards + files)
    checkpoint = []
    if ckpts and (max_mib is None or used + ckpts[-1].stat().st_size <= max_mib * MIB):
        checkpoint = pack({CHECKPOINT_NAME: ckpts[-1]}, dest / CHECKPOINT_DIR, chunk_mib)
    return {"step": info.get("step"), "shards": shards, "checkpoint": checkpoint, "files": files}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_out", type=Path, help="the trainer's output folder (holds checkpoints/ and model/)")
    p.add_argument("dest", type=Path, help="output folder")
    p.add_argument("--chunk-mib", type=float, required=True, help="largest file written, in MiB")
    p.add_argument("--max-mib", type=float, default=None,
                   help="leave the checkpoint (optimizer state) out when all would exceed this many MiB")
    args = p.parse_args(argv)
    try:
        done = export(args.run_out, args.dest, args.chunk_mib, args.max_mib)
    except FileNotFoundError as e:
        print(e, file=sys.stderr)
        return 1
    with_ckpt = (f"the checkpoint in {len(done['checkpoint'])} chunks (resumable exactly)" if done["checkpoint"]
                 else "no checkpoint (over --max-mib or none written): a later run restarts Adam")
    print(f"wrote {len(done['shards'])} weight shards + manifest.json and {with_ckpt} to {args.dest} "
          f"(step {done['step'] if done['step'] is not None else '?'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
