"""mambast: fast arbitrary image style transfer with Mamba-ST (Botti et al., WACV 2025).

Heavy modules load on first use so that `import mambast` stays cheap.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["MambaST", "MambaSTConfig", "StylizeConfig", "stylize", "Stylizer", "PairStylizer", "Job", "plan_jobs",
           "keep_freed_memory", "__version__"]


def __getattr__(name):
    if name == "MambaST":
        from .model import MambaST
        return MambaST
    if name == "MambaSTConfig":
        from .config import MambaSTConfig
        return MambaSTConfig
    if name == "keep_freed_memory":
        from .runtime import keep_freed_memory
        return keep_freed_memory
    if name in ("StylizeConfig", "stylize", "Stylizer", "PairStylizer", "Job", "plan_jobs"):
        from . import inference
        return getattr(inference, name)
    raise AttributeError(f"module 'mambast' has no attribute {name!r}")
