"""`mambast.stylize`: one call, one pair, any input type; the loaded default model is kept between calls.

Settings are `StylizeConfig`'s; the work is `Stylizer.stylize`. This module only adapts inputs and outputs.
"""

from __future__ import annotations

import dataclasses
import os
import threading

import torch

from ..io import check_image_tensor, load_image, pil_to_tensor, tensor_to_pil
from .config import StylizeConfig, torch_dtype
from .controls import check_controls
from .precision import cast_autocast_weights
from .stylizer import Stylizer

_MODELS: dict = {}            # (weights, device, dtype) -> a loaded model, so a second call does not reload it
_MODELS_LOCK = threading.Lock()
OUTPUT_TYPES = ("pil", "pt")


def load_model(weights="default", config: StylizeConfig | None = None):
    """The model of `weights` ("default", a save_pretrained folder or a .safetensors file) on the config's device,
    its Linear/Conv2d weights stored in the config's dtype (`cast_autocast_weights`); config must be resolved."""
    from ..model import MambaST
    config = (config or StylizeConfig()).resolved()
    return cast_autocast_weights(MambaST.from_pretrained(weights), torch_dtype(config.dtype), config.device)


def cached_model(weights, config: StylizeConfig):
    """`load_model`, loaded once per (weights, device, dtype) in this process and kept (weights by path)."""
    key = (str(weights), config.device, config.dtype)
    with _MODELS_LOCK:
        if key not in _MODELS:
            _MODELS[key] = load_model(weights, config)
        return _MODELS[key]


def clear_model_cache() -> None:
    """Forget the models `stylize` keeps (to free their memory)."""
    with _MODELS_LOCK:
        _MODELS.clear()


def image_tensor(img, what: str = "image") -> torch.Tensor:
    """A PIL image, a path or a tensor ([3, H, W] or [1, 3, H, W] in [0, 1]) as a [1, 3, H, W] tensor; TypeError
    for anything else, ValueError for a tensor that is not one finite RGB image (`check_image_tensor`), ImageError
    for a file that cannot be read; `what` names it ("content", "style")."""
    from PIL import Image
    if isinstance(img, torch.Tensor):
        return check_image_tensor(img, what)
    if isinstance(img, (str, os.PathLike)):
        img = load_image(img)
    if not isinstance(img, Image.Image):
        raise TypeError(f"{what} must be a PIL image, a path or a tensor; got {type(img).__name__}")
    return check_image_tensor(pil_to_tensor(img), what)


def merged_config(config: StylizeConfig | None, settings: dict, caller: str) -> StylizeConfig:
    """`config` (default StylizeConfig()) with `settings` (StylizeConfig field names) overriding it; TypeError
    naming `caller` for a setting that is not a field."""
    unknown = sorted(set(settings) - set(vars(StylizeConfig())))
    if unknown:
        raise TypeError(f"{caller}() got unknown settings {', '.join(unknown)}; accepted: StylizeConfig's fields")
    return StylizeConfig(**{**vars(config or StylizeConfig()), **settings})


def resolved_for(model, config: StylizeConfig) -> StylizeConfig:
    """`config.resolved()` for `model`: on the model's device if it is a MambaST (a weights path or None: as the
    config says). ValueError as `resolved`'s."""
    if isinstance(model, torch.nn.Module):
        config = dataclasses.replace(config, device=str(next(model.parameters()).device))
    return config.resolved()


def model_and_config(model, config: StylizeConfig):
    """(model, `resolved_for(model, config)`): a MambaST as given, or the model of a weights path or None (the
    bundled one), loaded once per device and dtype and kept (`cached_model`)."""
    if model is not None and not isinstance(model, (torch.nn.Module, str, os.PathLike)):
        raise TypeError(f"model must be a MambaST, a weights path or None; got {type(model).__name__}")
    config = resolved_for(model, config)
    if isinstance(model, torch.nn.Module):
        return model, config
    return cached_model(model or "default", config), config


def stylize(content, style, model=None, *, config: StylizeConfig | None = None, output_type: str = "pil",
            weights=None, mask=None, **settings):
    """Stylize one content image with one style image, or with several styles mixed or placed by a mask.

    content, style: PIL images, paths, or tensors ([3, H, W] / [1, 3, H, W] in [0, 1]); style may be a list of them.
    model: a MambaST, a weights path, or None for the bundled default model (paths and the default are loaded
    once per device and dtype, then kept). config: a StylizeConfig; settings: any of its fields (size, margin, seed,
    strength, preserve_color, shuffle, dtype, device, compile, cuda_graphs), overriding it. weights: one number
    per style, scaled to sum 1 (default: equal). mask: an image (PIL, path or tensor) of the content's aspect
    ratio whose grey levels, darkest first, select the styles in order. Returns a PIL image (or a [1, 3, H, W]
    tensor in [0, 1] with output_type="pt") of the content's pixel size. ValueError for bad settings or controls,
    raised before the model is loaded.
    """
    if output_type not in OUTPUT_TYPES:
        raise ValueError(f"output_type must be one of {', '.join(map(repr, OUTPUT_TYPES))}; got {output_type!r}")
    config = merged_config(config, settings, "stylize").check()
    styles = ([image_tensor(s, f"style {i + 1}") for i, s in enumerate(style)] if isinstance(style, (list, tuple))
              else [image_tensor(style, "style")])
    content = image_tensor(content, "content")
    weights, region = check_controls(len(styles), weights, mask)      # bad controls: before the model loads
    if region is not None:
        region.check_fits(content.shape[-1], content.shape[-2])
    model, config = model_and_config(model, config)
    y = Stylizer.from_config(model, config).stylize(content, styles if len(styles) > 1 else styles[0],
                                                    weights=weights, mask=region)
    return tensor_to_pil(y) if output_type == "pil" else y
