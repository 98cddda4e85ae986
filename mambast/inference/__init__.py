"""Inference around the model: settings (`config`), image geometry, precision, the one `Stylizer`, CUDA graphs,
folder-job planning (`jobs`), the `stylize` call, and datasets (`dataset` plans them, `ray_engine` runs them on Ray
Data). It builds on `mambast.model` and never changes it.

Names load on first use so that the CLI stays light.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "StylizeConfig": "config", "DEFAULT_SIZE": "config", "DTYPES": "config",
    "Stylizer": "stylizer", "PairStylizer": "stylizer", "ByteLRU": "stylizer", "stylize_tensor": "stylizer",
    "Job": "jobs", "JobPlan": "jobs", "plan_jobs": "jobs", "output_name": "jobs",
    "stylize": "api", "load_model": "api",
    "DatasetPlan": "dataset", "plan_dataset": "dataset", "DatasetSummary": "ray_engine", "stylize_dataset": "ray_engine",
}
__all__ = sorted(_WHERE)


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
