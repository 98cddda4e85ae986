"""Training checkpoints: atomic writes, listing and pruning, and capture/restore of every RNG state.

Checkpoints hold only tensors and plain Python values, so they load with `torch.load(weights_only=True)`; they
carry a checksum of their payload and are checked field by field before a run resumes from them.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_write
from ..errors import MambastError, one_line

from .config import TrainError

FORMAT = "mambast-train-checkpoint"
RUN_CONFIG = "train_config.json"   # in a run's folder: its training settings and model config, written at start
_NAME = re.compile(r"^step_(\d+)\.pt$")


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}.pt"


def rng_state(device: torch.device | None = None) -> dict:
    """The python, numpy, torch CPU and (where used) CUDA generator states, as weights-only-safe values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": random.getstate(),
             "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached": float(cached)},
             "torch": torch.get_rng_state()}
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _numpy_state(n: dict) -> tuple:
    """numpy's legacy RNG state tuple from the dict `rng_state` stores."""
    return "MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]


def set_rng_state(state: dict, device: torch.device | None = None) -> None:
    random.setstate(state["python"])
    np.random.set_state(_numpy_state(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if device is not None and device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def payload_digest(obj) -> str:
    """SHA-256 of a checkpoint's values (tensor bytes, dtypes, shapes, keys, numbers, in order): torch.load does
    not check the zip's CRCs, so a flipped byte would otherwise resume silently on damaged values."""
    h = hashlib.sha256()

    def feed(v) -> None:
        if isinstance(v, torch.Tensor):
            t = v.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{list(t.shape)}".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy())
        elif isinstance(v, dict):
            h.update(f"D{len(v)}".encode())
            for k, x in v.items():
                feed(k)
                feed(x)
        elif isinstance(v, (list, tuple)):
            h.update(f"{type(v).__name__[0]}{len(v)}".encode())
            for x in v:
                feed(x)
        elif v is None or isinstance(v, (bool, int, float, str)):
            h.update(f"{type(v).__name__}:{v!r};".encode("utf-8", "surrogatepass"))
        else:
            raise TypeError(f"a checkpoint cannot hold {type(v).__name__}")
    feed(obj)
    return h.hexdigest()


def save_checkpoint(payload: dict, path: Path) -> Path:
    """torch.save to a temp file in the same folder, then os.replace: a reader never sees half a file, and a
    failed write (a full disk) is a TrainError that leaves the checkpoints already there as they were."""
    body = {"format": FORMAT, **payload}
    body["sha256"] = payload_digest(body)
    try:
        return atomic_write(path, lambda tmp: torch.save(body, tmp), suffix=".tmp")
    except (OSError, RuntimeError) as e:   # torch's writer reports a full disk as a RuntimeError of its internals
        why = e.strerror if isinstance(e, OSError) and e.strerror else "the write failed"
        free = shutil.disk_usage(Path(path).parent).free / 1e9 if Path(path).parent.is_dir() else 0
        raise TrainError(f"checkpoint: cannot write {path} ({why}; {free:.1f} GB free there); the checkpoints "
                         "before it are kept: free space, then --resume latest") from None


def _numbered_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """(step, path) of the step_*.pt files in `folder`, oldest step first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name)))


def list_checkpoints(folder: Path) -> list[Path]:
    """step_*.pt files in `folder`, oldest step first."""
    return [p for _, p in _numbered_checkpoints(folder)]


def prune_checkpoints(folder: Path, keep: int) -> None:
    for p in list_checkpoints(folder)[:-keep] if keep > 0 else []:
        p.unlink(missing_ok=True)


SET_ASIDE = "set-aside"   # in a checkpoint folder: checkpoints past the step a run resumed from


def set_aside_later_checkpoints(folder: Path, step: int) -> list[Path]:
    """Move the checkpoints of `folder` past `step` into folder/set-aside/ and return their new paths: a run resumed
    from `step` writes its own later ones, and pruning by step number would otherwise delete the new ones (or keep a
    damaged newer file) while a later --resume picked the abandoned run's."""
    later = [p for s, p in _numbered_checkpoints(folder) if s > step]
    moved = []
    for p in later:
        dest = Path(folder) / SET_ASIDE / p.name
        dest.parent.mkdir(exist_ok=True)
        n = 1
        while dest.exists():   # set aside before: keep both
            dest = dest.with_name(f"{p.stem}.{n}{p.suffix}")
            n += 1
        p.replace(dest)
        moved.append(dest)
    return moved


def _integer(v, least: int = 0) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= least


def _check_rng(state) -> None:
    """Apply an RNG state to throwaway generators: whatever they refuse, set_rng_state would refuse mid-setup."""
    random.Random().setstate(state["python"])
    np.random.RandomState().set_state(_numpy_state(state["numpy"]))
    torch.Generator().set_state(state["torch"])
    if "cuda" in state and not (isinstance(state["cuda"], torch.Tensor) and state["cuda"].dtype == torch.uint8):
        raise TypeError("the CUDA state is not a byte tensor")


def _check_optimizer(opt, shapes: list) -> None:
    """Adam's state for parameters of `shapes`: every index once in the groups, moments of each one's shape."""
    groups = opt["param_groups"]
    indices = sorted(i for g in groups for i in g["params"])
    if indices != list(range(len(shapes))):
        raise ValueError(f"its groups hold parameters {indices[:3]}..., the model has {len(shapes)}")
    for i, state in opt["state"].items():
        for name, t in state.items():
            if not isinstance(t, torch.Tensor) or not torch.isfinite(t).all():
                raise ValueError(f"state {i}.{name} is not a finite tensor")
            if t.dim() and t.shape != shapes[i]:
                raise ValueError(f"state {i}.{name} has shape {list(t.shape)}, its parameter {list(shapes[i])}")


# What a damaged field makes the checks (or torch, numpy, random) raise.
_FIELD_ERRORS = (MambastError, ValueError, TypeError, KeyError, IndexError, AttributeError, RuntimeError)


def _check_field(name: str, check, *args):
    """check(*args), its errors turned into one ValueError naming the field (ours name it already)."""
    try:
        return check(*args)
    except _FIELD_ERRORS as e:
        why = f"{e.args[0]!r} is missing" if isinstance(e, KeyError) else one_line(e)
        raise ValueError(str(e) if isinstance(e, MambastError) else f"field {name}: {why}") from None


def _require(ok: bool, what: str) -> None:
    if not ok:
        raise ValueError(what)


def _check_fields(ckpt: dict) -> None:
    """ValueError naming the first field a resume could not use."""
    from ..config import MambaSTConfig
    from ..weights import check_against_config

    missing = [k for k in ("step", "model", "optimizer", "rng", "data", "model_config", "world_size") if k not in ckpt]
    if missing:
        raise ValueError(f"field {missing[0]} is missing")
    _check_field("step", _require, _integer(ckpt["step"]), "must be an integer >= 0")
    _check_field("world_size", _require, _integer(ckpt["world_size"], 1), "must be an integer >= 1")
    config = _check_field("model_config", MambaSTConfig.from_dict, ckpt["model_config"])
    _check_field("model", _require, isinstance(ckpt["model"], dict), "must be a state dict")
    shapes = _check_field("model", check_against_config, ckpt["model"], config, "field model")
    _check_field("optimizer", _check_optimizer, ckpt["optimizer"], shapes)
    rng = ckpt["rng"]
    _check_field("rng", _require, isinstance(rng, list) and len(rng) > 0, "must be a list of RNG states")
    for i, state in enumerate(rng):
        _check_field(f"rng[{i}]", _check_rng, state)
    data = ckpt["data"]
    _check_field("data", _require, isinstance(data, dict) and isinstance(data.get("seen"), dict),
                 "must hold the counts of images seen")
    _check_field("data.seen", _require, all(_integer(data["seen"].get(k)) for k in ("content", "style")),
                 "must count content and style images (integers >= 0)")
    _check_field("data.skipped", _require, _integer(data.get("skipped", 0)), "must be an integer >= 0")
    train = ckpt.get("train_config", {})
    _check_field("train_config", _require, isinstance(train, dict) and _integer(train.get("batch_size", 1), 1),
                 "must be a training config (batch_size an integer >= 1)")


def recorded_model_config(run_out: Path):
    """The model config a run's folder records (`RUN_CONFIG`, which the trainer writes); None if there is none.
    ValueError, TypeError or KeyError for a record that is not one we wrote."""
    from ..config import MambaSTConfig
    path = Path(run_out) / RUN_CONFIG
    if not path.is_file():
        return None
    return MambaSTConfig.from_dict(json.loads(path.read_text())["model"])


def _load_valid(path: Path, config=None) -> dict:
    """The checkpoint at `path`, read and checked: readable, ours, its checksum right, every field usable. Refused
    unread if larger than a run of `config` (default: the published model) writes: the weights and Adam's two
    moments, float32, within `pth_bound`."""
    from ..config import MambaSTConfig
    from ..weights import load_torch_file, pth_bound
    numbers = 3 * (config or MambaSTConfig()).num_parameters
    try:
        ckpt = load_torch_file(path, "training checkpoint", max_bytes=pth_bound(numbers))
    except MambastError as e:
        raise TrainError(f"resume: {e}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise TrainError(f"resume: {path} is not a mambast training checkpoint")
    digest = ckpt.pop("sha256", None)
    try:
        if digest is None:   # written before checkpoints carried checksums: the field checks below still run
            warnings.warn(f"{path}: no payload checksum (written by an older mambast): damage cannot be detected",
                          stacklevel=2)
        elif payload_digest(ckpt) != digest:
            raise ValueError("its payload does not match its checksum (damaged)")
        _check_fields(ckpt)
    except (ValueError, TypeError, RecursionError) as e:   # TypeError: a value the digest cannot read
        raise TrainError(f"resume: {path}: {one_line(e)}") from None
    return ckpt


def load_checkpoint(path: Path, config=None) -> dict:
    """A checked checkpoint of a run of model `config` (see `_load_valid`); TrainError naming the file otherwise."""
    try:
        return _load_valid(Path(path), config)
    except TrainError as e:
        raise TrainError(f"{e} (--resume latest takes the newest valid checkpoint)") from None


def newest_valid_checkpoint(found: list[Path], say, config=None) -> dict:
    """The newest of `found` (oldest first) that is valid for a run of model `config`, saying which one and why
    newer ones were passed over; TrainError if none is."""
    skipped = []
    for path in reversed(found):
        try:
            ckpt = _load_valid(path, config)
        except TrainError as e:
            say(f"{e}: trying the one before")
            skipped.append(path)
            continue
        say(f"resuming from {path}" + (f" (the newest valid checkpoint; {len(skipped)} newer skipped)" if skipped
                                      else ""))
        return ckpt
    raise TrainError(f"resume: none of the {len(found)} checkpoints in {found[0].parent} is valid (see above); "
                     "start a fresh run in another --out")
