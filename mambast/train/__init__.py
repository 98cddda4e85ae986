"""Training Mamba-ST: the `TrainConfig` recipe, data, losses, the loop with checkpoints, and DDP helpers.

Importing this package is cheap; torch-heavy modules load when used (`from mambast.train.trainer import train`).
"""

from .config import TrainConfig, TrainError

__all__ = ["TrainConfig", "TrainError", "train"]


def train(cfg: TrainConfig, vgg=None) -> int:
    """Run training as configured; returns the exit code (see `mambast.train.trainer.train`)."""
    from .trainer import train as _train
    return _train(cfg, vgg=vgg)
