"""Compatibility shim: evaluation lives in `mambast.metrics.evaluate` now."""

from .metrics.evaluate import *  # noqa: F401,F403
from .metrics.evaluate import _mambast_stylizer, _resize_crop  # noqa: F401
