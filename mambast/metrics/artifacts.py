"""Two artefact measures of a stylized image: the token-grid pattern and stripes along the borders.

Both take an image tensor [3, H, W] (or [B, 3, H, W]) in [0, 1] and return 8-bit grey levels, so a number reads
as "how many grey levels of pattern". Compare with the same measure of the content image: natural photos score
well below 1 on the grid (0.34 on average on the evaluation contents) but several levels on the border (10.5
there: objects meet the edges), so a border step means something only against the content's.

- `grid_amplitude`: the RMS of the pattern that repeats with the model's patch size (8 px). The luminance minus
  its p x p box average (which removes everything smooth and keeps a p-periodic pattern whole) is averaged over
  all p x p tiles at the same phase as the token grid; an image without such a pattern averages to about 0.
- `border_step`: how much the outermost band of pixels departs in colour from the trend of the two bands inside
  it, per side (the largest of the four): a stripe along an edge is a step there that the picture does not have.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LUMA = (0.299, 0.587, 0.114)   # ITU-R BT.601 luma weights


def _batched(img: torch.Tensor) -> torch.Tensor:
    if img.dim() == 3:
        img = img[None]
    if img.dim() != 4 or img.shape[1] != 3:
        raise ValueError(f"expected an image [3, H, W] or [B, 3, H, W]; got {tuple(img.shape)}")
    return img.float()


def grid_amplitude(img: torch.Tensor, period: int = 8) -> torch.Tensor:
    """RMS, in 8-bit grey levels, of the luminance pattern repeating every `period` pixels in phase with the
    token grid (tiles start at pixel 0). Returns [B] (a 0-d tensor for one image)."""
    x = _batched(img)
    B, _, H, W = x.shape
    if H < 2 * period or W < 2 * period:
        raise ValueError(f"image {H}x{W} is too small for a period of {period} px")
    y = torch.einsum("bchw,c->bhw", x, torch.tensor(LUMA, dtype=x.dtype))[:, None] * 255.0   # [B, 1, H, W]
    smooth = F.avg_pool2d(y, period, stride=1)                              # [B, 1, H-p+1, W-p+1]
    h, w = (smooth.shape[2] // period) * period, (smooth.shape[3] // period) * period
    # box average of pixels i..i+p-1 is centred between i + p/2 - 1 and i + p/2: compare it with pixel i + p//2
    off = period // 2
    resid = y[:, :, off:off + h, off:off + w] - smooth[:, :, :h, :w]
    # phase of pixel off + i is (off + i) % p: roll so tiles line up with the token grid
    tiles = resid.reshape(B, h // period, period, w // period, period).mean(dim=(1, 3))      # [B, p, p]
    tiles = torch.roll(tiles, shifts=(off, off), dims=(1, 2))
    pattern = tiles - tiles.mean(dim=(1, 2), keepdim=True)
    out = pattern.pow(2).mean(dim=(1, 2)).sqrt()
    return out[0] if img.dim() == 3 else out


def border_step(img: torch.Tensor, band: int = 8, segment: int | None = None) -> torch.Tensor:
    """Largest over the four sides of the colour step (8-bit levels) of the outer `band` pixels against the
    picture's own trend: the outer band's mean minus its linear extrapolation 2 m1 - m2 from the two bands inside
    it (a gradient scores 0, a stripe its height), averaged over `segment`-pixel runs along the side (default: the
    whole side; texture cancels, a stripe does not), then its absolute value averaged over runs and RGB. The default
    band is one token (8 px at the working size), the width of the stripes seen. Returns [B] (0-d for one)."""
    x = _batched(img) * 255.0
    H, W = x.shape[2:]
    if H < 6 * band or W < 6 * band:
        raise ValueError(f"image {H}x{W} is too small for {band}-px bands")

    def bands(t: torch.Tensor, dim: int) -> list[torch.Tensor]:   # means of the 3 bands from index 0 along dim
        return [t.narrow(dim, i * band, band).mean(dim) for i in range(3)]

    steps = []
    for t, dim in ((x, 2), (x.flip(2), 2), (x, 3), (x.flip(3), 3)):      # top, bottom, left, right
        m0, m1, m2 = bands(t, dim)                                       # [B, 3, side]
        d = m0 - (2 * m1 - m2)
        seg = min(segment or d.shape[2], d.shape[2])
        n = d.shape[2] // seg * seg
        d = d[:, :, :n].reshape(*d.shape[:2], -1, seg).mean(3)          # texture averages out along the side
        steps.append(d.abs().mean(dim=(1, 2)))
    out = torch.stack(steps, dim=1).amax(dim=1)
    return out[0] if img.dim() == 3 else out
