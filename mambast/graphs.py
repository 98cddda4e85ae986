"""Compatibility shim: CUDA graphs live in `mambast.inference.graphs` now."""

from .inference.graphs import *  # noqa: F401,F403
from .inference.graphs import GRAPH_MAX_PIXELS, GraphCache, _capture_stream, graph_pays  # noqa: F401
