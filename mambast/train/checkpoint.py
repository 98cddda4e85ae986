"""Training checkpoints: atomic writes, listing and pruning, and capture/restore of every RNG state.

Checkpoints hold only tensors and plain Python values, so they load with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_write

from .config import TrainError

FORMAT = "mambast-train-checkpoint"
_NAME = re.compile(r"^step_(\d+)\.pt$")


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}.pt"


def rng_state(device: torch.device | None = None) -> dict:
    """The python, numpy, torch CPU and (where used) CUDA generator states, as weights-only-safe values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(),
             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached": float(cached)},
             "torch": torch.get_rng_state()}
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device | None = None) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if device is not None and device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def save_checkpoint(payload: dict, path: Path) -> Path:
    """torch.save to a temp file in the same folder, then os.replace: a reader never sees half a file."""
    return atomic_write(path, lambda tmp: torch.save({"format": FORMAT, **payload}, tmp), suffix=".tmp")


def list_checkpoints(folder: Path) -> list[Path]:
    """step_*.pt files in `folder`, oldest step first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def prune_checkpoints(folder: Path, keep: int) -> None:
    for p in list_checkpoints(folder)[:-keep] if keep > 0 else []:
        p.unlink(missing_ok=True)


def load_checkpoint(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise TrainError(f"resume: {path} is not a checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors of every kind: one line
        raise TrainError(f"resume: cannot read {path} ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise TrainError(f"resume: {path} is not a mambast training checkpoint")
    return ckpt
