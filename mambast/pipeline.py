"""Compatibility shim: the folder pipeline is `mambast.inference.stylizer.Stylizer` now."""

from .inference.jobs import Job  # noqa: F401
from .inference.stylizer import ByteLRU, PairStylizer, Stylizer  # noqa: F401
