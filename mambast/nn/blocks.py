"""The layers around SS2D: VSS block, ST cross block, patch embedding, CNN decoder, DropPath.

Token grids are channel-last, [B, H', W', C]; pixels are [B, 3, H, W].
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import MambaSTConfig
from .ss2d import SS2D, CrossSS2D


class DropPath(nn.Module):
    """Stochastic depth: drop a whole sample's residual branch with probability p (training only)."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = torch.rand(x.shape[0], *([1] * (x.dim() - 1)), device=x.device, dtype=x.dtype) >= self.p
        return x * keep / (1.0 - self.p)


class VSSBlock(nn.Module):
    """y = norm(x * skip_scale + DropPath(SS2D(ln_1(x))))."""

    def __init__(self, cfg: MambaSTConfig, drop_path: float, scan_impl: str = "auto"):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.dim, eps=cfg.ln_eps)
        self.self_attention = SS2D(cfg, scan_impl)
        self.skip_scale = nn.Parameter(torch.ones(cfg.dim))
        self.drop_path = DropPath(drop_path)
        self.norm = nn.LayerNorm(cfg.dim, eps=cfg.ln_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x * self.skip_scale + self.drop_path(self.self_attention(self.ln_1(x))))


class STBlock(nn.Module):
    """Cross block: y = norm(x * skip_scale + DropPath(ST-SS2D(ln_1(x), s))); the style skips ln_1."""

    def __init__(self, cfg: MambaSTConfig, drop_path: float, scan_impl: str = "auto"):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.dim, eps=cfg.ln_eps)
        self.self_attention = CrossSS2D(cfg, scan_impl)
        self.skip_scale = nn.Parameter(torch.ones(cfg.dim))
        self.drop_path = DropPath(drop_path)
        self.norm = nn.LayerNorm(cfg.dim, eps=cfg.ln_eps)

    def forward(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return self.norm(x * self.skip_scale + self.drop_path(self.self_attention(self.ln_1(x), s)))


class PatchEmbed(nn.Module):
    """[B, 3, H, W] -> [B, H/p, W/p, C] by a p x p conv of stride p (shared by content and style)."""

    def __init__(self, cfg: MambaSTConfig):
        super().__init__()
        self.proj = nn.Conv2d(3, cfg.dim, cfg.patch_size, stride=cfg.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


class ReflectConv3x3(nn.Conv2d):
    """`nn.ReflectionPad2d(1)` then a 3x3 `nn.Conv2d` without padding, in one module (same parameters).

    On the CPU the padded copy is never made: a zero-padded convolution is exact away from the border,
    and its border rows and columns are recomputed from thin reflect-padded strips (4 / side of the
    convolution's work). At 512² that skips the decoder's nine padded copies (up to 67 MB each): 1.94-1.98
    -> 1.93 s per stylization on 2 cores (`benchmarks/stylize_cpu.py`). Elsewhere (not yet measured on a
    GPU) it pads, then convolves.
    """

    def __init__(self, cin: int, cout: int):
        super().__init__(cin, cout, 3)

    def _padded(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), self.weight, self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        if x.device.type != "cpu" or H < 2 or W < 2:   # (a side of 1 cannot be reflected: F.pad raises)
            return self._padded(x)
        y = F.conv2d(x, self.weight, self.bias, padding=1)
        rows = lambda i: F.pad(x[:, :, i], (1, 1, 0, 0), mode="reflect")     # noqa: E731  reflected rows i
        cols = lambda j: F.pad(x[:, :, :, j], (0, 0, 1, 1), mode="reflect")  # noqa: E731
        w, b = self.weight, self.bias
        y[:, :, :1] = F.conv2d(rows([1, 0, 1]), w, b)
        y[:, :, -1:] = F.conv2d(rows([H - 2, H - 1, H - 2]), w, b)
        y[..., :1] = F.conv2d(cols([1, 0, 1]), w, b)
        y[..., -1:] = F.conv2d(cols([W - 2, W - 1, W - 2]), w, b)
        return y


def cnn_decoder(cfg: MambaSTConfig) -> nn.Sequential:
    """Tokens [B, C, H', W'] back to pixels [B, 3, H, W].

    Three nearest x2 upsamplings; 3x3 convs with reflection padding, ReLU after all but the last.
    Module indices match the authors' checkpoint (convs at 1, 5, 8, 11, 14, 18, 21, 25, 28): each of
    their `ReflectionPad2d(1)` modules is an `nn.Identity` here, its padding done by the convolution after it.
    """
    c1, c2, c3 = cfg.decoder_channels

    def conv(cin, cout, relu=True):
        layers = [nn.Identity(), ReflectConv3x3(cin, cout)]
        return layers + [nn.ReLU()] if relu else layers

    up = [nn.Upsample(scale_factor=2, mode="nearest")]
    return nn.Sequential(
        *conv(cfg.dim, c1), *up,
        *conv(c1, c1), *conv(c1, c1), *conv(c1, c1), *conv(c1, c2), *up,
        *conv(c2, c2), *conv(c2, c3), *up,
        *conv(c3, c3), *conv(c3, 3, relu=False),
    )
