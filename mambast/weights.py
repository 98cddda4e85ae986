"""Weights of the Mamba-ST model: `mambast.loading`'s functions with MambaST as the class they build.

The machinery is model-agnostic in `mambast.loading` (which the model inherits from); this module sits above
the model, for callers that name no class.
"""

from __future__ import annotations

from functools import partial

from .loading import *  # noqa: F401,F403
from .loading import build_checked as _build_checked
from .loading import check_against_config as _check_against_config
from .loading import load_official as _load_official
from .loading import load_pretrained as _load_pretrained
from .model import MambaST

build_checked = partial(_build_checked, cls=MambaST)
check_against_config = partial(_check_against_config, cls=MambaST)
load_official = partial(_load_official, cls=MambaST)
load_pretrained = partial(_load_pretrained, cls=MambaST)
