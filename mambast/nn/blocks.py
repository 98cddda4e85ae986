"""The layers around SS2D: VSS block, ST cross block, patch embedding, CNN decoder, DropPath.

Token grids are channel-last, [B, H', W', C]; pixels are [B, 3, H, W].
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import MambaSTConfig
from ..ops import conv3x3_reflect, upsample_nearest2x
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


def _unhooked(module: nn.Module) -> bool:
    """Whether calling `module` runs nothing but its forward (no hooks on it, no global module hooks), so that a
    caller may compute the same from its parameters in another way."""
    from torch.nn.modules import module as m
    return not (module._forward_hooks or module._forward_pre_hooks or m._global_forward_hooks
                or m._global_forward_pre_hooks)


class PatchEmbed(nn.Module):
    """[B, 3, H, W] -> [B, H/p, W/p, C] by a p x p conv of stride p (shared by content and style)."""

    def __init__(self, cfg: MambaSTConfig):
        super().__init__()
        self.proj = nn.Conv2d(3, cfg.dim, cfg.patch_size, stride=cfg.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The conv as one matrix product over the flattened patches (a conv of stride = size is one; the tokens
        come out contiguous): on an H200 cuDNN's kernel for these 3-channel inputs was the slow part
        (docs/performance.md; in float32 on CUDA the product also leaves out cuDNN's default TF32). Sides
        that are not multiples of p, and a `proj` with hooks, take the conv module (which drops the rest)."""
        B, C, H, W = x.shape
        p = self.proj.stride[0]
        if H % p or W % p or not _unhooked(self.proj):
            return self.proj(x).permute(0, 2, 3, 1)
        patches = x.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 1, 3, 5).reshape(B, H // p, W // p, C * p * p)
        return F.linear(patches, self.proj.weight.reshape(self.proj.out_channels, -1), self.proj.bias)


class Upsample2x(nn.Module):
    """Nearest-neighbour upsampling by 2 (`mambast.ops.upsample_nearest2x`); no parameters."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upsample_nearest2x(x)


class CNNDecoder(nn.Sequential):
    """Tokens [B, C, H', W'] back to pixels [B, 3, H, W].

    Three nearest x2 upsamplings; 3x3 convs with reflection padding, ReLU after all but the last.
    Module indices match the authors' checkpoint (convs at 1, 5, 8, 11, 14, 18, 21, 25, 28). The last three
    modules (the ReLU before the output layer, its padding and its conv) run as one operator
    (`mambast.ops.conv3x3_reflect`: for 16-bit CUDA inference a Triton kernel on channels-last activations, as
    torch.compile hands them over; otherwise what these modules compute). Under torch.compile that operator also
    adds the bias of the conv before it. A slice is a plain `nn.Sequential`.
    """

    def __init__(self, cfg: MambaSTConfig):
        c1, c2, c3 = cfg.decoder_channels

        def conv(cin, cout, relu=True):
            layers = [nn.ReflectionPad2d(1), nn.Conv2d(cin, cout, 3)]
            return layers + [nn.ReLU()] if relu else layers

        up = [Upsample2x()]
        super().__init__(
            *conv(cfg.dim, c1), *up,
            *conv(c1, c1), *conv(c1, c1), *conv(c1, c1), *conv(c1, c2), *up,
            *conv(c2, c2), *conv(c2, c3), *up,
            *conv(c3, c3), *conv(c3, 3, relu=False),
        )

    def __getitem__(self, idx):
        if isinstance(idx, slice):   # a plain Sequential of those modules (the fused tail needs all of them)
            return nn.Sequential(*list(self._modules.values())[idx])
        return super().__getitem__(idx)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *body, last_hidden, _relu, _pad, out = self
        for layer in body:
            x = layer(x)
        # Under torch.compile a pass over the largest activation remained before the output layer (0.25 ms at 512²
        # batch 16; by its name, the last hidden conv's bias): there that conv runs without its bias and the output
        # layer adds it (the fused kernel on load). A conv module with hooks is called as it is.
        if torch.compiler.is_compiling() and _unhooked(last_hidden):
            hidden = last_hidden._conv_forward(x, last_hidden.weight, None)
            return conv3x3_reflect(hidden, out.weight, out.bias, in_bias=last_hidden.bias)
        return conv3x3_reflect(last_hidden(x), out.weight, out.bias)


def cnn_decoder(cfg: MambaSTConfig) -> CNNDecoder:
    """The CNN decoder (see `CNNDecoder`)."""
    return CNNDecoder(cfg)
