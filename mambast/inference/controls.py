"""The creative controls, each implemented once, in the model's token space where that is where they belong:

- strength A: the decoder's input is A x (the stylized tokens) + (1 - A) x (the content fused with itself as its
  own style, the identity path of the paper's identity loss): A = 0 gives the model's reconstruction of the content;
- style mixing: the content fused with each style, the fused tokens averaged with the style weights (AdaIN's
  interpolation, Huang & Belongie 2017, sec. 7), then decoded once;
- region masks: the same average with a weight map per style, from a mask's grey levels, pooled to the 8-pixel
  token grid and blurred by one token (the CNN decoder then paints a soft, seamless border);
- colour preservation: the stylized luminance, matched in mean and spread to the content's, with the content's
  chroma (luminance transfer, Gatys et al. 2016), so that the output's chroma is the content's.

Why these and not the alternatives (pixel blending, style-token blending, grey-image transfer, colour matching):
docs/controls.md, with pictures. The `Stylizer` runs them (`Recipe`: which fused grids an output needs and with
which weights); this module holds the arithmetic and the checks, and runs no model.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

MASK_LEVEL_GAP = 8            # grey levels this close (or closer) are one region (JPEG noise)
MASK_MAX_SPAN = 32            # a run of adjacent levels wider than this is a gradient, not a flat region
MASK_ASPECT_TOLERANCE = 0.01  # a mask's aspect ratio may differ from the content's by 1 %
BORDER_SIGMA_TOKENS = 1.0     # blur of the region weights, in tokens (8 working pixels)

# BT.601 YCbCr (full range), as JPEG uses it: luma, blue and red chroma of RGB in [0, 1].
_YCC = ((0.299, 0.587, 0.114), (-0.168736, -0.331264, 0.5), (0.5, -0.418688, -0.081312))
_RGB = tuple(map(tuple, np.linalg.inv(np.array(_YCC)).tolist()))     # its inverse, computed once (no GPU solve)


# ------------------------------------------------------------------------------------------------ settings

def parse_weights(text: str) -> tuple[float, ...]:
    """'0.7,0.3' -> (0.7, 0.3); ValueError for anything that is not a comma list of numbers."""
    try:
        weights = tuple(float(w) for w in str(text).split(","))
    except ValueError:
        raise ValueError(f"weights must be a comma list of numbers, one per style (e.g. 0.7,0.3); got {text!r}") \
            from None
    return weights


def normalise_weights(weights: Sequence[float] | None, n_styles: int) -> tuple[float, ...]:
    """One weight per style, scaled to sum 1 (None: equal weights); ValueError for a count that does not match
    the styles, a negative or non-finite weight, or weights that are all 0."""
    if weights is None:
        return (1.0 / n_styles,) * n_styles
    if isinstance(weights, (str, bytes)):
        weights = parse_weights(weights)
    try:
        w = [float(x) for x in weights]
    except (TypeError, ValueError):
        raise ValueError(f"weights must be numbers, one per style; got {weights!r}") from None
    if len(w) != n_styles:
        raise ValueError(f"weights: {len(w)} given for {n_styles} style{'s' * (n_styles != 1)}; give one per style")
    if not all(math.isfinite(x) and x >= 0 for x in w) or sum(w) <= 0:
        raise ValueError(f"weights must be >= 0, finite and not all 0; got {','.join(map(str, weights))}")
    top = max(w)
    w = [x / top for x in w]   # first to 1 at most: the sum of weights near the float limit would overflow
    total = sum(w)
    return tuple(x / total for x in w)


# ------------------------------------------------------------------------------------------------ region masks

@dataclass(eq=False)
class RegionMask:
    """A mask's regions: `labels` [H, W] (uint8, 0 = the darkest region) and the grey `levels` they were drawn in.
    Region k takes style k."""
    labels: np.ndarray
    levels: tuple[int, ...]
    _maps: dict = field(default_factory=dict, repr=False)

    @property
    def count(self) -> int:
        return len(self.levels)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return self.labels.shape[1], self.labels.shape[0]

    def check_styles(self, n_styles: int) -> None:
        """ValueError unless there is one style per region: region k takes style k, so a style beyond the regions
        would be silently unused."""
        if self.count != n_styles:
            s = "s" * (self.count != 1)
            raise ValueError(f"mask has {self.count} region{s} (grey level{s} {', '.join(map(str, self.levels))}) "
                             f"but {n_styles} style{'s' * (n_styles != 1)} {'were' if n_styles != 1 else 'was'} "
                             f"given: give one style per region, darkest first")

    def check_fits(self, width: int, height: int, name: str = "content") -> None:
        """ValueError if the mask's aspect ratio differs from a width x height image's by more than 1 %."""
        mw, mh = self.size
        if abs(math.log((mw / mh) / (width / height))) > MASK_ASPECT_TOLERANCE:
            raise ValueError(f"mask is {mw} x {mh}, {name} is {width} x {height}: the mask needs the {name}'s "
                             f"aspect ratio (within 1 %)")

    def token_weights(self, working: tuple[int, int], padded: tuple[int, int], patch: int,
                      device=None, margin: int = 0) -> torch.Tensor:
        """[count, H', W'] weights of the regions on the token grid of a content worked at `working` (h, w) with
        `margin` pixels around it and padded to `padded`: each region's share of a token's pixels, blurred by
        BORDER_SIGMA_TOKENS tokens, then scaled to sum 1 at every token. Cached per geometry."""
        key = (tuple(working), tuple(padded), patch, margin)
        if key not in self._maps:
            labels = torch.from_numpy(self.labels)
            planes = []
            for k in range(self.count):       # one plane at a time: a large mask costs one float plane at once
                plane = (labels == k).float()[None, None]
                plane = F.interpolate(plane, size=tuple(working), mode="area")
                plane = F.pad(plane, (margin, padded[1] - working[1] - margin, margin, padded[0] - working[0] - margin),
                              mode="replicate")
                planes.append(F.avg_pool2d(plane, patch))
            maps = gaussian_blur(torch.cat(planes, 1), BORDER_SIGMA_TOKENS)[0]
            self._maps[key] = maps / maps.sum(0, keepdim=True).clamp_min(1e-12)
        return self._maps[key].to(device) if device is not None else self._maps[key]


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """[B, C, H, W] blurred by a separable Gaussian (radius 3 sigma, edges replicated)."""
    r = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-t * t / (2 * sigma * sigma))
    k = k / k.sum()
    C = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).expand(C, 1, 1, -1), groups=C)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1).expand(C, 1, -1, 1), groups=C)


def mask_regions(grey: np.ndarray) -> RegionMask:
    """The regions of a grey mask [H, W] (uint8): its distinct grey levels sorted darkest first. A level counts
    where it fills a pixel's whole 3 x 3 neighbourhood somewhere (so the greys of anti-aliased edges join the
    nearest region), and levels within MASK_LEVEL_GAP of each other are one (JPEG noise). ValueError for a
    gradient (levels that run on over more than MASK_MAX_SPAN)."""
    g = grey.astype(np.int16)
    padded = np.pad(g, 1, mode="edge")
    H, W = g.shape
    spread = np.zeros_like(g)
    for dy in range(3):
        for dx in range(3):
            np.maximum(spread, np.abs(padded[dy:dy + H, dx:dx + W] - g), out=spread)
    interior = grey[spread <= MASK_LEVEL_GAP]
    hist = np.bincount(interior if interior.size else grey.ravel(), minlength=256)   # tiny masks: every level
    present = np.flatnonzero(hist)
    runs = np.split(present, np.flatnonzero(np.diff(present) > MASK_LEVEL_GAP) + 1)
    for run in runs:
        if run[-1] - run[0] > MASK_MAX_SPAN:
            raise ValueError(f"mask has a gradient of grey levels ({run[0]}..{run[-1]}), not flat regions: draw "
                             "each region in one grey level")
    centres = np.array([np.average(run, weights=hist[run]) for run in runs])
    lut = np.abs(np.arange(256)[:, None] - centres[None, :]).argmin(1).astype(np.uint8)
    return RegionMask(lut[grey], tuple(int(round(c)) for c in centres))


def load_mask(mask) -> RegionMask:
    """A RegionMask from a RegionMask, a PIL image, a path, or a tensor / array ([H, W], [1, H, W], [1, 1, H, W] or
    RGB, values in [0, 1] for floats); colours count by their grey level (ITU-R 601 luma, as PIL converts)."""
    if isinstance(mask, RegionMask):
        return mask
    from PIL import Image
    if isinstance(mask, (str, Path)):
        from ..io import load_image
        mask = load_image(mask)
    if isinstance(mask, Image.Image):
        grey = np.asarray(mask.convert("RGB").convert("L"))
    else:
        if isinstance(mask, torch.Tensor):   # integer levels kept as integers, as numpy's are
            mask = mask.detach().cpu()
            mask = mask.float() if mask.dtype in (torch.float16, torch.bfloat16) else mask
        a = mask.numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
        while a.ndim > 3 and a.shape[0] == 1:                      # batch dimensions of one
            a = a[0]
        if a.ndim == 3 and a.shape[0] in (1, 3):                 # channels first -> last
            a = np.moveaxis(a, 0, -1)
        if a.ndim == 3 and a.shape[-1] == 1:
            a = a[..., 0]
        if a.ndim == 3 and a.shape[-1] == 3:
            a = a @ np.array(_YCC[0])
        if a.ndim != 2 or a.size == 0:
            raise ValueError(f"mask must be an image ([H, W], [1, H, W] or [3, H, W]); got shape {np.shape(mask)}")
        if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool) or np.iscomplexobj(a):
            raise ValueError(f"mask must hold real numbers; got {a.dtype}")
        if a.dtype == bool:                                     # True: white, False: black
            a = a.astype(np.uint8) * 255
        elif np.issubdtype(a.dtype, np.floating):
            if not np.isfinite(a).all():
                raise ValueError("mask holds NaN or Inf values")
            a = a * 255.0
        grey = np.clip(np.rint(a), 0, 255).astype(np.uint8)
    return mask_regions(grey)


def check_controls(n_styles: int | None, weights=None, mask=None) -> tuple[tuple[float, ...] | None,
                                                                           RegionMask | None]:
    """(weights scaled to sum 1 or None, the mask's regions or None) for n_styles styles (None: not known yet);
    ValueError for weights and a mask together, weights that do not match the styles, a mask whose regions are
    not one per style or no regions to read; ImageError for a mask file that cannot be read."""
    if weights is not None and mask is not None:
        raise ValueError("give style weights or a region mask, not both (the mask chooses each region's style)")
    region = None if mask is None else load_mask(mask)
    if n_styles is not None:
        if n_styles < 1:
            raise ValueError("no style given")
        if weights is not None:
            weights = normalise_weights(weights, n_styles)
        if region is not None:
            region.check_styles(n_styles)
    elif weights is not None:
        normalise_weights(weights, len(weights) if not isinstance(weights, str) else len(parse_weights(weights)))
    return weights, region


# ------------------------------------------------------------------------------------------------ what to fuse

@dataclass
class Recipe:
    """How one output's decoder input is made: the weighted sum of fused token grids, one per `styles` entry
    (index into the styles given; -1: the identity path, the content as its own style). Weights are floats or
    [H', W'] maps (region masks); they sum to 1 at every token."""
    styles: list[int]
    weights: list

    @property
    def single(self) -> bool:
        """Whether the decoder input is one fused grid as it is (the plain stylization, or strength 0)."""
        return len(self.styles) == 1 and not isinstance(self.weights[0], torch.Tensor)


IDENTITY = -1


def recipe(n_styles: int, strength: float = 1.0, weights=None, mask: RegionMask | None = None,
           maps: torch.Tensor | None = None) -> Recipe:
    """The fused grids and weights of an output: the styles (by weight, or by `maps` [regions, H', W'] of a mask;
    None: only count the grids) scaled by strength, and the identity path by 1 - strength. Weights of 0 drop
    their style (so weights 1,0 fuse exactly what the first style alone does)."""
    styles, ws = [], []
    if strength > 0:
        if mask is not None:
            for k in range(mask.count):
                styles.append(k)
                ws.append(None if maps is None else maps[k] * strength if strength < 1 else maps[k])
        else:
            for k, w in enumerate(normalise_weights(weights, n_styles)):
                if w > 0:
                    styles.append(k)
                    ws.append(w * strength)
    if strength < 1:
        styles.append(IDENTITY)
        ws.append(1.0 - strength)
    if len(styles) == 1 and not isinstance(ws[0], torch.Tensor):
        ws = [1.0]                      # exactly the one grid, whatever rounding left in its weight
    return Recipe(styles, ws)


def blend(fused: torch.Tensor, weights: Sequence) -> torch.Tensor:
    """Σ weight x fused grid: fused [n, H', W', C], one weight each (a float or an [H', W'] map) -> [1, H', W', C]
    in float32."""
    out = None
    for x, w in zip(fused.split(1), weights):
        w = w[None, :, :, None].to(x.device) if isinstance(w, torch.Tensor) else w
        term = x.float() * w
        out = term if out is None else out + term
    return out


# ------------------------------------------------------------------------------------------------ colour

@functools.cache
def _matrix(rows: tuple, device: torch.device) -> torch.Tensor:
    """A colour matrix on `device`, made once: a tensor made from a list is a blocking copy to a GPU, which would
    make a caller that only queues GPU work (the video path) wait for it. A normal tensor, also under inference
    mode, so that it serves both."""
    with torch.inference_mode(False):
        return torch.tensor(rows, device=device)


def to_ycbcr(x: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] RGB in [0, 1] -> Y, Cb, Cr (BT.601, full range; chroma centred on 0)."""
    return torch.einsum("ij,bjhw->bihw", _matrix(_YCC, x.device), x.float())


def from_ycbcr(y: torch.Tensor) -> torch.Tensor:
    """The inverse of `to_ycbcr`, clamped to [0, 1]."""
    return torch.einsum("ij,bjhw->bihw", _matrix(_RGB, y.device), y.float()).clamp_(0, 1)


def preserve_colors(stylized: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """[B, 3, H, W] (same sizes, in [0, 1]) -> the stylized luminance, shifted and scaled to the content's mean and
    spread, with the content's chroma (Cb, Cr): the content's colours, the style's texture."""
    s, c = to_ycbcr(stylized), to_ycbcr(content)
    ys, yc = s[:, :1], c[:, :1]
    ms, ss = ys.mean((2, 3), keepdim=True), ys.std((2, 3), keepdim=True)
    mc, sc = yc.mean((2, 3), keepdim=True), yc.std((2, 3), keepdim=True)
    y = (ys - ms) / ss.clamp_min(1e-6) * sc + mc
    return from_ycbcr(torch.cat([y, c[:, 1:]], 1))
