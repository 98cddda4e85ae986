"""Geometry of stylizing images of any size: working size, style fitting, padding, cropping and resizing back.

The model itself needs equal content/style grids with sides multiple of 8; this module provides that and
runs no model.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .config import DEFAULT_SIZE, MAX_WORKING_PIXELS  # noqa: F401  (DEFAULT_SIZE re-exported)

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


def check_working_size(h: int, w: int, device=None, margin: int = 0) -> None:
    """ValueError if an h x w working size with `margin` pixels around it is beyond MAX_WORKING_PIXELS (huge
    images at their original size), or, on the CPU, needs more memory than is available (the kernel would kill
    the process, or the machine would swap for hours, instead of an error)."""
    h, w = h + 2 * margin, w + 2 * margin
    if h * w > MAX_WORKING_PIXELS:
        raise ValueError(f"working size {w} x {h} is too large to stylize ({h * w:,} pixels, limit "
                         f"{MAX_WORKING_PIXELS:,}): use a smaller --size (or --margin)")
    free = available_memory() if device is None or torch.device(device).type == "cpu" else None
    if free is not None and h * w * CPU_BYTES_PER_PIXEL > free:
        raise ValueError(f"working size {w} x {h} needs about {h * w * CPU_BYTES_PER_PIXEL / 1e9:.1f} GB of memory, "
                         f"{free / 1e9:.1f} GB is available: use a smaller --size (or --margin)")


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


def add_margin(x: torch.Tensor, margin: int) -> torch.Tensor:
    """x [B, C, H, W] with `margin` pixels mirrored around each side (on all sides replicated instead where a side
    of x is not longer than the margin: mirroring needs more pixels than it copies)."""
    if margin == 0:
        return x
    mode = "reflect" if margin < min(x.shape[-2:]) else "replicate"
    return F.pad(x, (margin, margin, margin, margin), mode=mode)


def prepare_content(content: torch.Tensor, size: int | None, multiple: int, margin: int = 0):
    """The content at its working size (`working_size`; size None: as is) with `margin` pixels mirrored around it,
    padded to a multiple of `multiple`, and the working size; ValueError if it is too large
    (`check_working_size`, margin included, before resizing)."""
    working = working_size(*content.shape[-2:], size, multiple) if size is not None else tuple(content.shape[-2:])
    check_working_size(*working, content.device, margin)
    return pad_to_multiple(add_margin(resize(content, working), margin), multiple)[0], working


def prepare_style(style: torch.Tensor, working: tuple[int, int], multiple: int, margin: int = 0) -> torch.Tensor:
    """The style fitted to the content's working size, with its margins mirrored as the content's (fitting it to the
    larger size would scale its strokes up) and padded as the content."""
    return pad_to_multiple(add_margin(fit_style(style, *working), margin), multiple)[0]


def prepare_pair(content: torch.Tensor, style: torch.Tensor, size: int | None, multiple: int, margin: int = 0):
    """Working-size content (with its margins) and a fitted style, both padded to a multiple of `multiple`, and
    the working size."""
    content, working = prepare_content(content, size, multiple, margin)
    return content, prepare_style(style, working, multiple, margin), working


def finish_output(y: torch.Tensor, working: tuple[int, int], orig: tuple[int, int] | None,
                  margin: int = 0) -> torch.Tensor:
    """Cut the margins and the padding off the model's output [B, 3, H', W'] (working size left), clamp to [0, 1],
    resize back to `orig`."""
    h, w = working
    y = y.float()[..., margin:margin + h, margin:margin + w].clamp(0, 1)
    if orig is not None and tuple(y.shape[-2:]) != tuple(orig):
        y = F.interpolate(y, size=tuple(orig), mode="bicubic", align_corners=False,
                          antialias=orig[0] < h).clamp(0, 1)
    return y


def to_uint8(y: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] (as `finish_output` gives them) -> uint8, rounded to the nearest level."""
    return y.mul(255.0).add_(0.5).to(torch.uint8)
