"""Model weights as bf16 safetensors shards below a size limit, and back to one fp32 state dict.

Brings trained weights back from a machine that returns only small files (export.py writes them, merge.py
reads them); no training logic here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

SHARD_PATTERN = "weights-{:05d}.safetensors"
MANIFEST = "manifest.json"


def write_shards(state: dict[str, torch.Tensor], folder: str | os.PathLike, max_bytes: int = 15 * 2 ** 20,
                 dtype: torch.dtype = torch.bfloat16, info: dict | None = None) -> list[Path]:
    """Greedily pack tensors (cast to `dtype` when floating) into shards of at most `max_bytes` each.

    Writes `manifest.json` (shard names, tensor count, and `info`, e.g. the model config and step).
    """
    from safetensors.torch import save_file
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for k, v in state.items():
        v = v.detach().cpu()
        v = (v.to(dtype) if v.is_floating_point() else v).contiguous()
        n = v.numel() * v.element_size()
        if n > max_bytes - 4096:
            raise ValueError(f"tensor {k} ({n} bytes) does not fit a shard of max_bytes={max_bytes}")
        if size + n > max_bytes - 65536 and shards[-1]:   # leave room for the safetensors header
            shards.append({})
            size = 0
        shards[-1][k] = v
        size += n
    paths = []
    for i, shard in enumerate(shards):
        path = folder / SHARD_PATTERN.format(i + 1)
        save_file(shard, str(path))
        paths.append(path)
    manifest = {"shards": [p.name for p in paths], "tensors": len(state), "dtype": str(dtype).replace("torch.", ""),
                **(info or {})}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return paths


def read_shards(folder: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """(fp32 state dict, manifest) from a folder written by `write_shards`."""
    from safetensors.torch import load_file
    folder = Path(folder)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{folder}: no {MANIFEST}")
    manifest = json.loads(manifest_path.read_text())
    state: dict[str, torch.Tensor] = {}
    for name in manifest["shards"]:
        for k, v in load_file(str(folder / name)).items():
            state[k] = v.float() if v.is_floating_point() else v
    if len(state) != manifest["tensors"]:
        raise ValueError(f"{folder}: shards hold {len(state)} tensors, manifest says {manifest['tensors']}")
    return state, manifest
