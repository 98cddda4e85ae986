"""Write the newest training checkpoint's model weights as bf16 safetensors shards (< 16 MiB) + manifest.json.

Usage: python scripts/device_export.py RUN_OUT DEST  (RUN_OUT: the trainer's --out folder). Undo: merge_shards.py.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHARD_BYTES = int(15.5 * 2 ** 20)


def main(argv=None) -> int:
    from mambast.train.checkpoint import list_checkpoints, load_checkpoint
    from mambast.train.shards import write_shards

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("run_out", type=Path, help="the trainer's output folder (holds checkpoints/ and model/)")
    p.add_argument("dest", type=Path, help="folder for the shards (e.g. $OUT)")
    args = p.parse_args(argv)
    ckpts = list_checkpoints(args.run_out / "checkpoints")
    if ckpts:
        ckpt = load_checkpoint(ckpts[-1])
        state, info = ckpt["model"], {"model_config": ckpt["model_config"], "step": ckpt["step"],
                                      "train_config": ckpt["train_config"], "source": ckpts[-1].name}
    elif (args.run_out / "model").is_dir():
        from mambast.model import MambaST
        model = MambaST.from_pretrained(args.run_out / "model")
        state, info = model.state_dict(), {"model_config": model.config.to_dict(), "source": "model/"}
    else:
        print(f"nothing to export: no checkpoints or model/ in {args.run_out}", file=sys.stderr)
        return 1
    paths = write_shards(state, args.dest, max_bytes=SHARD_BYTES, info=info)
    print(f"wrote {len(paths)} shards + manifest.json to {args.dest} (step {info.get('step', '?')})")
    if len(paths) > 5:
        print("warning: more than 5 shards; with log.csv, the sample grid and the log tail that exceeds "
              "8 returned files", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
