"""Training images: recursive listing, random resize + crop + flip, and an infinite, checkpointable sampler.

Never reads an evaluation folder (paths containing `eval-set`); unreadable files are skipped, told once
each and counted, never a crash. Augmentation is a pure function of (seed, sample position).
"""

from __future__ import annotations

import math
import os
import signal
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import ImageError, printable
from ..io import IMAGE_SUFFIXES, load_image
from .config import TrainError

FORBIDDEN = "eval-set"
MAX_SKIPS_IN_A_ROW = 64


def _touches_eval(path: Path) -> bool:
    return FORBIDDEN in Path(path).parts or FORBIDDEN in Path(os.path.realpath(path)).parts


def image_suffixes() -> set[str]:
    """Every suffix Pillow can open, plus our own list."""
    from PIL import Image
    Image.init()
    return IMAGE_SUFFIXES | {s.lower() for s in Image.registered_extensions()}


def find_images(folder: str | os.PathLike, name: str = "folder") -> list[Path]:
    """All image files under `folder` (recursive, sorted); refuses evaluation folders."""
    folder = Path(folder)
    if _touches_eval(folder):
        raise TrainError(f"{name}: refusing to train on an evaluation folder ({folder})")
    if not folder.is_dir():
        raise TrainError(f"{name}: {folder} is not a folder")
    suffixes = image_suffixes()
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in suffixes and p.is_file())
    leaked = [p for p in files if _touches_eval(p)]
    if leaked:
        raise TrainError(f"{name}: {leaked[0]} resolves into an evaluation folder")
    if not files:
        raise TrainError(f"{name}: no images found under {folder}")
    return files


class InfiniteSampler(Sampler):
    """Yields (file index, sample position) forever; position g runs over start + rank, + world_size, ...

    Every epoch of the global stream is one seeded permutation of the files (or the identity with
    shuffle=False); ranks take interleaved positions, so together they read the global stream once.
    Restarting at `start` = samples already consumed (all ranks) continues exactly.
    """

    def __init__(self, n: int, seed: int = 0, start: int = 0, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True):
        if n <= 0:
            raise ValueError(f"n must be positive; got {n}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}); got {rank}")
        self.n, self.seed, self.start, self.rank, self.world_size, self.shuffle = n, seed, start, rank, world_size, shuffle

    def permutation(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def __iter__(self):
        g = self.start + self.rank
        epoch, perm = -1, []
        while True:
            e, i = divmod(g, self.n)
            if e != epoch:
                epoch, perm = e, self.permutation(e)
            yield perm[i], g
            g += self.world_size

    def __len__(self):  # nominal; the sampler never ends
        return 2 ** 62


class TrainImages(Dataset):
    """Item (file index, position) -> (uint8 image [3, crop, crop], the errors of the unreadable files skipped
    to reach it, one line each: "" for none).

    The image is resized to size x size ("square", as published) or to short side `size` ("short"),
    times U(1 - scale_jitter, 1 + scale_jitter), then randomly cropped and flipped. Randomness comes from
    (seed, position) only, so a resumed run sees the very same crops.
    """

    def __init__(self, files: list[Path], size: int = 512, crop: int = 256, resize: str = "square",
                 scale_jitter: float = 0.0, flip: bool = True, seed: int = 0):
        if resize not in ("square", "short"):
            raise ValueError(f"resize must be one of square, short; got {resize!r}")
        self.files, self.size, self.crop, self.resize = list(files), size, crop, resize
        self.scale_jitter, self.flip, self.seed = scale_jitter, flip, seed

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, str]:
        index, position = item
        rng = np.random.default_rng([self.seed, position])
        errors = []
        for k in range(min(len(self.files), MAX_SKIPS_IN_A_ROW)):
            path = self.files[(index + k) % len(self.files)]
            try:
                img = load_image(path)
            except ImageError as e:   # returned, not warned: a loader worker would warn in a process of its own
                errors.append(printable(e))
                continue
            return self.augment(img, rng), "\n".join(errors)
        raise TrainError(f"{MAX_SKIPS_IN_A_ROW} unreadable images in a row near {self.files[index]}")

    def augment(self, img, rng: np.random.Generator) -> torch.Tensor:
        from PIL import Image
        W, H = img.size
        s = self.size * (1 + rng.uniform(-self.scale_jitter, self.scale_jitter)) if self.scale_jitter else self.size
        if self.resize == "square":
            tw = th = s
        else:
            tw, th = W * s / min(W, H), H * s / min(W, H)
        c = self.crop
        x0 = int(rng.integers(0, max(math.floor(tw) - c, 0) + 1))
        y0 = int(rng.integers(0, max(math.floor(th) - c, 0) + 1))
        sx, sy = W / tw, H / th
        # resize the whole image to (tw, th) and crop c x c at (x0, y0), done as one resize of the source box
        img = img.resize((c, c), Image.BICUBIC, box=(x0 * sx, y0 * sy, (x0 + c) * sx, (y0 + c) * sy))
        if self.flip and rng.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)   # [H, W, 3] -> [3, H, W]


def _ignore_stop_signals(worker_id: int) -> None:
    """Loader workers ignore SIGINT and SIGTERM: a stop signal sent to the whole process group (Ctrl-C in a
    terminal, torchrun stopping its ranks) then reaches only the trainer, which finishes its step and writes a
    checkpoint; the workers end with it (they also exit when their parent dies)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


class ImageStream:
    """An endless iterator of uint8 batches [B, 3, crop, crop] whose position can be saved and restored; prints
    `[train] skipped FILE: reason` on stderr the first time this rank meets an unreadable file."""

    def __init__(self, dataset: TrainImages, batch_size: int, workers: int = 0, seed: int = 0, start: int = 0,
                 rank: int = 0, world_size: int = 1, pin_memory: bool = False):
        self.dataset, self.batch_size, self.world_size = dataset, batch_size, world_size
        self.seen = start                      # samples consumed by all ranks together
        self.skipped = 0                       # unreadable files met by this rank
        self._told: set[str] = set()           # the errors of those already printed
        sampler = InfiniteSampler(len(dataset), seed=seed, start=start, rank=rank, world_size=world_size)
        self.loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                                 pin_memory=pin_memory, drop_last=True, persistent_workers=workers > 0,
                                 prefetch_factor=4 if workers > 0 else None,
                                 generator=torch.Generator().manual_seed(seed),  # keeps the global RNG untouched
                                 worker_init_fn=_ignore_stop_signals if workers > 0 else None)
        self._it = None

    def __next__(self) -> torch.Tensor:
        if self._it is None:
            self._it = iter(self.loader)
        images, errors = next(self._it)
        self.seen += self.batch_size * self.world_size
        for error in filter(None, "\n".join(errors).split("\n")):
            self.skipped += 1
            if error not in self._told:        # once, however many epochs and loader workers meet the file
                self._told.add(error)
                print(f"[train] skipped {error}", file=sys.stderr, flush=True)
        return images

    def __iter__(self):
        return self

    def close(self) -> None:
        self._it = None                        # lets the worker processes shut down


def fixed_batch(files: list[Path], n: int, crop: int) -> torch.Tensor:
    """n readable images spread over `files`, short side resized to `crop` and centre-cropped: [n, 3, crop, crop]."""
    from PIL import Image
    out, step = [], max(len(files) // n, 1)
    for path in files[::step] + files:
        if len(out) == n:
            break
        try:
            img = load_image(path)
        except ImageError:
            continue
        W, H = img.size
        s = crop / min(W, H)
        left, top = (W * s - crop) / 2 / s, (H * s - crop) / 2 / s
        img = img.resize((crop, crop), Image.BICUBIC, box=(left, top, left + crop / s, top + crop / s))
        out.append(torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1))
    if not out:
        raise TrainError("no readable images for the sample grid")
    return torch.stack(out).float().div_(255.0)
