"""Stylize images of any size: resize to a working resolution, fit the style, pad, run, crop, resize back.

The model itself needs equal content/style grids with sides multiple of 8; this module provides that.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import torch
import torch.nn.functional as F

from .io import load_image, pil_to_tensor, tensor_to_pil

DEFAULT_SIZE = 512
# Largest working size (pixels) stylized: 4096 x 4096 takes about 14 GiB on a GPU in bf16, more on a CPU.
MAX_WORKING_PIXELS = 4096 * 4096
# A working size holds at most this many size x size squares: a strip or panorama costs what a 2:1 image does.
MAX_SQUARES = 2
# Peak memory of a CPU stylization per working pixel (float32, measured 1.0-1.3 KB from 512² to 2048², plus margin).
CPU_BYTES_PER_PIXEL = 1536


def short_side_size(H: int, W: int, size: int) -> tuple[int, int]:
    """(h, w) with short side `size` and the aspect ratio of H x W."""
    s = size / min(H, W)
    return max(1, round(H * s)), max(1, round(W * s))


def working_size(H: int, W: int, size: int, multiple: int = 8) -> tuple[int, int]:
    """(h, w) at which an H x W content is stylized: short side `size`, aspect ratio kept, but at most
    MAX_SQUARES * size² pixels once padded (`pad_to_multiple`), so that a strip costs what a 2:1 image does
    (a 1000 x 24 strip at 512 is worked at 4674 x 112, not 21,333 x 512)."""
    cap = MAX_SQUARES * size * size
    s = min(size / min(H, W), math.sqrt(cap / (H * W)))
    if min(H, W) * s < 2 * multiple:   # the short side is padded to 2 * multiple: the long side pays for it
        s = min(s, cap / (2 * multiple * max(H, W)))
    return max(1, round(H * s)), max(1, round(W * s))


def available_memory() -> int | None:
    """Bytes of memory the system can still give (Linux's MemAvailable), None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_working_size(h: int, w: int, device=None) -> None:
    """ValueError if an h x w working size is beyond MAX_WORKING_PIXELS (huge images at their original size),
    or, on the CPU, needs more memory than is available (the kernel would kill the process, or the machine
    would swap for hours, instead of an error)."""
    if h * w > MAX_WORKING_PIXELS:
        raise ValueError(f"working size {w} x {h} is too large to stylize ({h * w:,} pixels, limit "
                         f"{MAX_WORKING_PIXELS:,}): use a smaller --size")
    free = available_memory() if device is None or torch.device(device).type == "cpu" else None
    if free is not None and h * w * CPU_BYTES_PER_PIXEL > free:
        raise ValueError(f"working size {w} x {h} needs about {h * w * CPU_BYTES_PER_PIXEL / 1e9:.1f} GB of memory, "
                         f"{free / 1e9:.1f} GB is available: use a smaller --size")


def resize(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """[B, 3, H, W] -> [B, 3, h, w] (bicubic, antialiased when shrinking)."""
    if tuple(hw) == tuple(x.shape[-2:]):
        return x
    shrink = hw[0] < x.shape[-2] or hw[1] < x.shape[-1]
    return F.interpolate(x, size=tuple(hw), mode="bicubic", align_corners=False, antialias=shrink).clamp_(0, 1)


def resize_short_side(x: torch.Tensor, size: int) -> torch.Tensor:
    """[B, 3, H, W] -> short side `size`, aspect ratio kept (antialiased when shrinking)."""
    return resize(x, short_side_size(*x.shape[-2:], size))


def _mirror_tile(x: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    """Extend x along `dim` to at least `size` by appending mirrored copies (no seams)."""
    while x.shape[dim] < size:
        x = torch.cat([x, x.flip(dim)], dim=dim)
    return x


def _centre_crop(x: torch.Tensor, H: int, W: int) -> torch.Tensor:
    top, left = (x.shape[-2] - H) // 2, (x.shape[-1] - W) // 2
    return x[..., top:top + H, left:left + W]


def fit_style(style: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """Bring the style to H x W keeping its stroke shapes: short side to min(H, W), then centre crop
    where it is larger, mirror-tile where it is smaller (never stretched)."""
    hs, ws = style.shape[-2:]
    scale = min(H, W) / min(hs, ws)
    if hs * ws * scale * scale > 16 * H * W:  # a long strip: first crop to what the final crop keeps (plus a
        # margin for the filter) so that its resized copy stays small; same parity as the strip, so that the
        # crop is centred exactly where the final centre crop will be
        keep = [min(n, math.ceil(m / scale) + 8) for n, m in ((hs, H), (ws, W))]
        keep = [k + 1 if (n - k) % 2 else k for k, n in zip(keep, (hs, ws))]
        style = _centre_crop(style, *keep)
    style = resize_short_side(style, min(H, W))
    style = _mirror_tile(_mirror_tile(style, H, -2), W, -1)
    return _centre_crop(style, H, W)


def pad_to_multiple(x: torch.Tensor, m: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad bottom/right to a multiple of m, at least 2m (the token grid needs 2 cells for the decoder's
    reflection padding); reflect, or replicate for images too small to reflect."""
    H, W = x.shape[-2:]
    ph, pw = max(-H % m, 2 * m - H), max(-W % m, 2 * m - W)
    if ph == 0 and pw == 0:
        return x, (H, W)
    mode = "reflect" if ph < H and pw < W else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode), (H, W)


def prepare_content(content: torch.Tensor, size: int | None, multiple: int):
    """The content at its working size (`working_size`; size None: as is) padded to a multiple of `multiple`,
    and the working size; ValueError if it is too large (`check_working_size`, before resizing)."""
    working = working_size(*content.shape[-2:], size, multiple) if size is not None else tuple(content.shape[-2:])
    check_working_size(*working, content.device)
    return pad_to_multiple(resize(content, working), multiple)[0], working


def prepare_style(style: torch.Tensor, working: tuple[int, int], multiple: int) -> torch.Tensor:
    """The style fitted to the content's working size, padded as the content."""
    return pad_to_multiple(fit_style(style, *working), multiple)[0]


def prepare_pair(content: torch.Tensor, style: torch.Tensor, size: int | None, multiple: int):
    """Working-size content and a fitted style, both padded to a multiple of `multiple`, and the working size."""
    content, working = prepare_content(content, size, multiple)
    return content, prepare_style(style, working, multiple), working


@torch.inference_mode()
def stylize_tensor(model, content: torch.Tensor, style: torch.Tensor, size: int | None = DEFAULT_SIZE,
                   seed=None, shuffle: bool = True, keep_size: bool = True, autocast_dtype=None) -> torch.Tensor:
    """content [1, 3, H, W], style [1, 3, h, w] in [0, 1] -> stylized [1, 3, H, W] in [0, 1].

    size: the content's working short side (see `working_size`; None: as is). keep_size: resize the result
    back to H x W (else it stays at the working size).
    """
    p = next(model.parameters())
    orig = content.shape[-2:]
    c, s, (h, w) = prepare_pair(content.to(p.device, torch.float32), style.to(p.device, torch.float32), size,
                                model.config.patch_size)
    with autocast(p.device.type, autocast_dtype):
        y = model(c.to(p.dtype), s.to(p.dtype), shuffle=shuffle, generator=seed)
    return finish_output(y, (h, w), tuple(orig) if keep_size else None)


def finish_output(y: torch.Tensor, working: tuple[int, int], orig: tuple[int, int] | None) -> torch.Tensor:
    """Crop the model's output [B, 3, H', W'] to the working size, clamp to [0, 1], resize back to `orig`."""
    h, w = working
    y = y.float()[..., :h, :w].clamp(0, 1)
    if orig is not None and tuple(y.shape[-2:]) != tuple(orig):
        y = F.interpolate(y, size=tuple(orig), mode="bicubic", align_corners=False,
                          antialias=orig[0] < h).clamp(0, 1)
    return y


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


def _as_tensor(img) -> torch.Tensor:
    if isinstance(img, torch.Tensor):
        return img if img.dim() == 4 else img[None]
    if isinstance(img, (str, Path)):
        img = load_image(img)
    return pil_to_tensor(img)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


DTYPES = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


def autocast_dtype(dtype: str | None, device) -> torch.dtype | None:
    """The autocast dtype for a --dtype name; None (the default) is bfloat16 on CUDA, float32 on CPU."""
    if dtype is None:
        dtype = "bfloat16" if str(device).startswith("cuda") else "float32"
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}; got {dtype!r}")
    return DTYPES[dtype]


def stylize(content, style, model=None, size: int | None = DEFAULT_SIZE, seed=None, shuffle: bool = True,
            device=None, dtype: str | None = None, output_type: str = "pil"):
    """Stylize one content image with one style image.

    content, style: PIL images, paths, or tensors ([3, H, W] / [1, 3, H, W] in [0, 1]). model: a
    MambaST, a weights path, or None for the bundled default model. dtype: "float32", "bfloat16" or
    "float16" compute (autocast; the scan state is float32 always); default bfloat16 on CUDA, float32
    on CPU. Returns a PIL image (or a
    [1, 3, H, W] tensor with output_type="pt") of the content's pixel size.
    """
    from .model import MambaST
    if output_type not in ("pil", "pt"):
        raise ValueError(f"output_type must be 'pil' or 'pt'; got {output_type!r}")
    if not isinstance(model, torch.nn.Module):
        model = MambaST.from_pretrained(model or "default", device=device or default_device())
    amp = autocast_dtype(dtype, next(model.parameters()).device)
    y = stylize_tensor(model, _as_tensor(content), _as_tensor(style), size=size, seed=seed, shuffle=shuffle,
                       autocast_dtype=amp)
    return tensor_to_pil(y) if output_type == "pil" else y
