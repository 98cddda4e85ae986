"""The artefact measures on images whose answer is known: a planted 8-px pattern, a planted border stripe."""

from __future__ import annotations

import math

import pytest
import torch

from mambast.metrics.artifacts import border_step, grid_amplitude


def smooth_image(H=64, W=96, seed=0):
    """A smooth random picture: low-frequency cosines per channel, in [0.1, 0.9]."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, H), torch.linspace(0, 1, W), indexing="ij")
    img = torch.zeros(3, H, W)
    for c in range(3):
        for _ in range(3):
            fy, fx, ph = (torch.rand(3, generator=g) * torch.tensor([0.5, 0.5, 6.28])).tolist()
            img[c] += 0.1 * torch.cos(2 * math.pi * (fy * yy + fx * xx) + ph)
    return img + 0.5


def test_grid_amplitude_recovers_a_planted_pattern():
    img = smooth_image()
    g = torch.Generator().manual_seed(1)
    tile = torch.randn(8, 8, generator=g)
    tile = (tile - tile.mean()) / tile.pow(2).mean().sqrt() * (6.0 / 255.0)   # RMS 6 grey levels, mean 0
    pattern = tile.repeat(64 // 8, 96 // 8)
    base = grid_amplitude(img).item()
    planted = grid_amplitude(img + pattern[None].expand(3, -1, -1)).item()   # grey pattern: luma weights sum to 1
    assert base < 0.5
    assert planted == pytest.approx(6.0, rel=0.1)


def test_grid_amplitude_ignores_noise_and_batches():
    g = torch.Generator().manual_seed(2)
    noisy = (smooth_image() + 0.02 * torch.randn(3, 64, 96, generator=g)).clamp(0, 1)
    a = grid_amplitude(noisy)
    assert a.dim() == 0 and a.item() < 1.0      # white noise of 5 levels averages out over 96 tiles
    batch = torch.stack([noisy, smooth_image(seed=3)])
    assert grid_amplitude(batch).shape == (2,)
    assert grid_amplitude(batch)[0].item() == pytest.approx(a.item(), rel=1e-5)


def test_border_step_finds_a_stripe_on_any_side():
    img = smooth_image()
    assert border_step(img).item() < 2.0
    sides = {"top": (slice(None), slice(0, 8), slice(None)), "bottom": (slice(None), slice(-8, None), slice(None)),
             "left": (slice(None), slice(None), slice(0, 8)), "right": (slice(None), slice(None), slice(-8, None))}
    for sl in sides.values():
        striped = img.clone()
        striped[sl] += 40 / 255
        assert border_step(striped).item() == pytest.approx(40.0, abs=2.0)


@pytest.mark.parametrize("bad", [torch.rand(1, 64, 64), torch.rand(3, 10, 10)])
def test_bad_images_are_refused(bad):
    with pytest.raises(ValueError):
        grid_amplitude(bad)
    with pytest.raises(ValueError):
        border_step(bad)
