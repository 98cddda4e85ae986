"""CFSD, content feature structural distance: how much stylization changed the self-similarity of content features.

Per image: VGG-19 relu3_1 features F [HW, C] / C, S = F F^T, and the KL divergence between the row
softmaxes of S_content and S_stylized, summed over rows (the authors' `kl_div(reduction='batchmean')` over a
batch of one flattened image). Rows are processed in chunks so the HW x HW matrix is never held whole.
StyleID's formula; on our normalised Caffe VGG-19 (reflect padding) it is "CFSD on our VGG-19": it ranks methods
measured here only and is not comparable with StyleID's numbers (theirs: torchvision's VGG-19, zero padding).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

RELU3_1 = 2   # index of relu3_1 in the VGG feature list [relu1_1, relu2_1, relu3_1, relu4_1, relu5_1]


def _positions(feat: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] -> [N, HW, C] divided by C."""
    n, c, h, w = feat.shape
    return feat.float().reshape(n, c, h * w).transpose(1, 2) / c


def cfsd_from_features(stylized: torch.Tensor, content: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """Per-image CFSD [N] from relu3_1 feature maps [N, C, H, W] of stylized images and of their contents
    ([N, C, H, W], or [1, C, H, W]: one content for all N, its self-similarity rows then computed once per chunk
    instead of N times, about half the work).

    sum over rows i of KL(softmax(S_content[i]) || softmax(S_stylized[i])); 0 when the features match.
    """
    if (stylized.dim() != 4 or content.dim() != 4 or stylized.shape[1:] != content.shape[1:]
            or content.shape[0] not in (1, stylized.shape[0])):
        raise ValueError(f"stylized and content features must be [N, C, H, W] alike (content also [1, C, H, W]); "
                         f"got {tuple(stylized.shape)} and {tuple(content.shape)}")
    fs, fc = _positions(stylized), _positions(content)                  # [N, HW, C], [N or 1, HW, C]
    shared = fc.shape[0] == 1
    out = torch.zeros(fs.shape[0], dtype=torch.float64, device=fs.device)
    for start in range(0, fs.shape[1], chunk):     # rows in chunks: bounded memory; 256 rows stay in a CPU's cache
        for n in range(fs.shape[0]):
            if n == 0 or not shared:
                c = fc[0 if shared else n]
                log_p = F.log_softmax(c[start:start + chunk] @ c.T, dim=-1)       # [rows, HW]
                p = log_p.exp()
            log_q = F.log_softmax(fs[n, start:start + chunk] @ fs[n].T, dim=-1)
            out[n] += (p * (log_p - log_q)).sum().double()
    return out.clamp_(min=0).float().cpu()      # KL >= 0; round-off can dip below for near-identical maps


def _relu3_1(vgg: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """relu3_1 of images [N, 3, H, W] in [0, 1]; the VGG stops there (the deeper levels would triple the work)."""
    device = next(vgg.parameters()).device
    return vgg(images.to(device, torch.float32), levels=RELU3_1 + 1)[RELU3_1]


@torch.no_grad()
def cfsd_distance(vgg: torch.nn.Module, stylized: torch.Tensor, content: torch.Tensor | None = None,
                  content_features: torch.Tensor | None = None, chunk: int = 256) -> torch.Tensor:
    """Per-image CFSD [N] of stylized images [N, 3, H, W] in [0, 1] against their content images
    (same shape), or against precomputed content relu3_1 features (broadcast over N if a single one).
    vgg: `VGG19Features`, or a module called as it is, vgg(x, levels=3) -> [relu1_1, relu2_1, relu3_1]."""
    fs = _relu3_1(vgg, stylized)
    if content_features is None:
        if content is None:
            raise ValueError("give content or content_features")
        content_features = _relu3_1(vgg, content)
    content_features = content_features.to(fs.device)
    if content_features.shape[0] != 1:
        content_features = content_features.expand_as(fs)
    return cfsd_from_features(fs, content_features, chunk).cpu()


@torch.no_grad()
def content_features(vgg: torch.nn.Module, content: torch.Tensor) -> torch.Tensor:
    """relu3_1 features [N, C, h, w] of content images [N, 3, H, W] in [0, 1] (to reuse over many styles)."""
    return _relu3_1(vgg, content)
