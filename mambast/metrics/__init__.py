"""Style-transfer quality metrics: FID (clean-fid preprocessing), LPIPS, CFSD on our VGG-19 and ArtFID.

Pure metric maths over features and images (loaded lazily, so the CLI stays light); the networks
live in `mambast.networks`, the end-to-end run (stylize, score, report) in `mambast.metrics.evaluate`.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "art_fid": "artfid",
    "cfsd_distance": "cfsd", "cfsd_from_features": "cfsd",
    "feature_statistics": "fid", "fid_from_features": "fid", "frechet_distance": "fid", "inception_features": "fid",
    "lpips_distance": "lpips",
}
__all__ = sorted(_WHERE)


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
