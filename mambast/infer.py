"""Compatibility shim: the names `mambast.infer` had, now in `mambast.inference` (geometry, precision, stylizer)."""

from .inference.api import stylize  # noqa: F401
from .inference.config import DEFAULT_SIZE, MAX_WORKING_PIXELS, autocast_dtype, default_device  # noqa: F401
from .inference.geometry import *  # noqa: F401,F403
from .inference.geometry import _centre_crop, _mirror_tile  # noqa: F401
from .inference.precision import autocast, cast_autocast_weights  # noqa: F401
from .inference.stylizer import stylize_tensor  # noqa: F401
