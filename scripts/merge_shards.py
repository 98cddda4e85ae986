"""Rebuild an fp32 save_pretrained folder (config.json + model.safetensors) from bf16 shards + manifest.json.

Usage: python scripts/merge_shards.py SHARDS_DIR --out MODEL_DIR  (SHARDS_DIR: what device_train_finish.sh returned)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    from mambast.config import MambaSTConfig
    from mambast.model import MambaST
    from mambast.train.shards import read_shards

    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("shards", type=Path, help="folder with weights-*.safetensors and manifest.json")
    p.add_argument("--out", type=Path, required=True, help="save_pretrained folder to write")
    args = p.parse_args(argv)
    state, manifest = read_shards(args.shards)
    model = MambaST(MambaSTConfig.from_dict(manifest["model_config"]))
    model.load_state_dict(state, strict=True)
    model.save_pretrained(args.out)
    info = {k: manifest[k] for k in ("step", "source", "train_config") if k in manifest}
    (args.out / "training.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    print(f"wrote {args.out} ({sum(v.numel() for v in state.values()) / 1e6:.2f} M parameters, "
          f"step {manifest.get('step', '?')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
