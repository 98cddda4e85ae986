"""The Mamba-ST training losses: content, style, identity 1 (pixels) and identity 2 (VGG features).

Each term is defined once here, on VGG-19 features [relu1_1, ..., relu5_1]; statistics are taken in fp32.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

EPS = 1e-5
TERMS = ("content", "style", "identity1", "identity2")


def mean_std(f: torch.Tensor, eps: float = EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and std over spatial positions: [B, C, H, W] -> ([B, C, 1, 1], [B, C, 1, 1]).

    std = sqrt(var + eps) with the unbiased variance (n - 1), as AdaIN-family code computes it.
    """
    B, C = f.shape[:2]
    flat = f.float().reshape(B, C, -1)                                   # [B, C, H*W]
    mean = flat.mean(dim=2)
    std = (flat.var(dim=2) + eps).sqrt()
    return mean.view(B, C, 1, 1), std.view(B, C, 1, 1)


def normalize(f: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """norm(f) = (f - mean) / std, per channel over spatial positions."""
    mean, std = mean_std(f, eps)
    return (f.float() - mean) / std


def _mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(a.float(), b.float())


def content_loss(out_feats: list[torch.Tensor], content_feats: list[torch.Tensor]) -> torch.Tensor:
    """MSE(norm(F4(O)), norm(F4(Ic))) + MSE(norm(F5(O)), norm(F5(Ic)))."""
    return sum(_mse(normalize(o), normalize(c)) for o, c in zip(out_feats[3:5], content_feats[3:5]))


def style_loss(out_feats: list[torch.Tensor], style_feats: list[torch.Tensor]) -> torch.Tensor:
    """sum_i MSE(mean(Fi(O)), mean(Fi(Is))) + MSE(std(Fi(O)), std(Fi(Is))) over the five layers."""
    total = 0.0
    for o, s in zip(out_feats, style_feats):
        (mo, so), (ms, ss) = mean_std(o), mean_std(s)
        total = total + _mse(mo, ms) + _mse(so, ss)
    return total


def identity1_loss(icc: torch.Tensor, content: torch.Tensor, iss: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    """MSE(Icc, Ic) + MSE(Iss, Is) on pixels."""
    return _mse(icc, content) + _mse(iss, style)


def identity2_loss(icc_feats, content_feats, iss_feats, style_feats) -> torch.Tensor:
    """sum_i MSE(Fi(Icc), Fi(Ic)) + MSE(Fi(Iss), Fi(Is)) over the five layers."""
    return sum(_mse(a, c) + _mse(b, s) for a, c, b, s in zip(icc_feats, content_feats, iss_feats, style_feats))


class StyleTransferLoss(nn.Module):
    """All four terms and their weighted total from two VGG passes: the targets (content, style) without
    gradients, the three model outputs with them.

    forward(content, style, output, icc, iss), each [B, 3, H, W] -> dict with "total" and TERMS
    (unweighted terms; "total" = 7 content + 10 style + 70 identity1 + 1 identity2 by default).
    """

    def __init__(self, vgg: nn.Module, content_weight: float = 7.0, style_weight: float = 10.0,
                 identity1_weight: float = 70.0, identity2_weight: float = 1.0):
        super().__init__()
        self.vgg = vgg
        self.weights = {"content": content_weight, "style": style_weight,
                        "identity1": identity1_weight, "identity2": identity2_weight}

    def forward(self, content, style, output, icc, iss) -> dict[str, torch.Tensor]:
        B = content.shape[0]
        # The targets' features need no gradient: in one call with the outputs, autograd would carry them through
        # the whole backward of the VGG (2 of its 5 batches for nothing).
        with torch.no_grad():
            targets = self.vgg(torch.cat([content, style]))                # each [2B, C_i, H_i, W_i]
        feats = self.vgg(torch.cat([output, icc, iss]))                     # each [3B, C_i, H_i, W_i]
        fc, fs = zip(*(f.split(B) for f in targets))                        # per-layer lists of [B, ...]
        fo, fcc, fss = zip(*(f.split(B) for f in feats))
        terms = {
            "content": content_loss(fo, fc),
            "style": style_loss(fo, fs),
            "identity1": identity1_loss(icc, content, iss, style),
            "identity2": identity2_loss(fcc, fc, fss, fs),
        }
        terms["total"] = sum(self.weights[k] * terms[k] for k in TERMS)
        return terms
