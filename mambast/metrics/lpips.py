"""LPIPS content distance between stylized images and their content images (lower: closer content).

Images come in [0, 1] and are scaled to [-1, 1] for the network, as the LPIPS metric expects.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def lpips_distance(net: torch.nn.Module, images: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """Per-image LPIPS [N] between images and references, both [N, 3, H, W] in [0, 1]."""
    if images.shape != references.shape:
        raise ValueError(f"images and references must have the same shape; got {tuple(images.shape)} and "
                         f"{tuple(references.shape)}")
    device = next(net.parameters()).device
    x = images.to(device, torch.float32) * 2 - 1
    y = references.to(device, torch.float32) * 2 - 1
    return net(x, y).float().cpu()
