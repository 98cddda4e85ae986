"""Compute precision of inference: autocast to a dtype, with Linear/Conv2d weights stored in it beforehand.

Precision names and their defaults live in `mambast.inference.config`; this module only applies them.
"""

from __future__ import annotations

import contextlib

import torch


def cast_autocast_weights(model: torch.nn.Module, dtype: torch.dtype | None, device=None) -> torch.nn.Module:
    """Store the weights and biases of Linear and Conv2d layers in `dtype` (in place; returns the model), then
    move the model to `device` if given (cast first: no float32 copies freed on a GPU between the cast weights,
    where their memory would stay reserved).

    Autocast to `dtype` casts exactly these to `dtype` before every use, so results under autocast are
    unchanged, while their float32 copies and autocast's per-forward cache of them (most of the
    parameters) are no longer held. Everything else (LayerNorms, the per-order projection matrices, the
    scan's A, D and dt bias) stays float32. The model then needs autocast to `dtype` to run.
    """
    if dtype is not None:
        for m in model.modules():
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
                m.to(dtype)
    return model if device is None else model.to(device)


def autocast(device_type: str, dtype: torch.dtype | None):
    """torch.autocast for a compute dtype, or a no-op context for float32 (None)."""
    return torch.autocast(device_type, dtype=dtype) if dtype else contextlib.nullcontext()
