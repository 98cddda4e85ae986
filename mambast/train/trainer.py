"""The Mamba-ST training loop: data streams, model, VGG losses, Adam, logs, sample grids, checkpoints, DDP.

Everything configurable comes from `TrainConfig`; resuming from a checkpoint continues a run exactly.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import random
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from ..atomic import atomic_write
from . import ddp
from .checkpoint import (RUN_CONFIG, checkpoint_name, list_checkpoints, load_checkpoint, newest_valid_checkpoint,
                         prune_checkpoints, recorded_model_config, rng_state, save_checkpoint,
                         set_aside_later_checkpoints, set_rng_state)
from .config import TrainConfig, TrainError, model_config
from .data import ImageStream, TrainImages, find_images, fixed_batch
from .losses import TERMS, StyleTransferLoss

LOG_TERMS = ("total",) + TERMS
CSV_COLUMNS = ("step",) + LOG_TERMS + ("lr", "it_per_s", "skipped_files", "elapsed_s")


PROFILE_STEPS = 3   # steps recorded by --profile
GRADIENT_WATCH_STEPS = 10   # first steps of a run in which every part of the model must receive some gradient


def resolve_device(name: str, info: ddp.DistInfo) -> torch.device:
    """'auto' -> CUDA if available else CPU; under several processes each takes its local GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise TrainError(f"device {name}: CUDA is not available")
        if info.enabled or device.index is None:
            device = torch.device("cuda", info.local_rank if info.enabled else torch.cuda.current_device())
    elif device.type != "cpu":
        raise TrainError(f"device must be auto, cpu, cuda or cuda:N; got {name!r}")
    return device


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


class Trainer:
    """trainer = Trainer(cfg); exit_code = trainer.run(). `vgg` replaces the loss network (tests)."""

    def __init__(self, cfg: TrainConfig, vgg: nn.Module | None = None):
        for name in ("content", "style", "out"):
            if not getattr(cfg, name):
                raise TrainError(f"{name} is required")
        self.cfg = cfg
        self.dist = ddp.from_env()
        self.device = resolve_device(cfg.device, self.dist)
        self.out = Path(cfg.out)
        self.ckpt_dir = self.out / "checkpoints"
        self._vgg = vgg
        self._signal: int | None = None
        self._created_group = False

    # ------------------------------------------------------------------ setup
    def _say(self, msg: str) -> None:
        if self.dist.is_main:
            print(f"[train] {msg}", file=sys.stderr, flush=True)

    def _largest(self, mcfg):
        """`mcfg`, or the model config this run's folder records if larger: resumed with a smaller --config than
        its own, a run's checkpoints are read, and refused for the config, not for their size."""
        try:
            recorded = recorded_model_config(self.out)
        except (OSError, ValueError, TypeError, KeyError):   # not a record we wrote: the given config
            return mcfg
        return recorded if recorded is not None and recorded.num_parameters > mcfg.num_parameters else mcfg

    def _resume_checkpoint(self, mcfg) -> dict | None:
        """The checkpoint to resume from, read only if no larger than a run of model `mcfg` writes."""
        if not self.cfg.resume:
            return None
        if self.cfg.resume == "latest":
            found = list_checkpoints(self.ckpt_dir)
            if not found:
                self._say(f"no checkpoint in {self.ckpt_dir}: starting a fresh run")
                return None
            return newest_valid_checkpoint(found, self._say, mcfg)
        else:
            path = Path(self.cfg.resume)
        self._say(f"resuming from {path}")
        return load_checkpoint(path, mcfg)

    def _setup(self) -> None:
        from ..config import MambaSTConfig
        from ..model import MambaST
        from ..networks.vgg import load_vgg19

        cfg, device = self.cfg, self.device
        content_files = find_images(cfg.content, "content")
        style_files = find_images(cfg.style, "style")
        if cfg.crop % 8:
            raise TrainError(f"crop must be a multiple of 8; got {cfg.crop}")
        if not cfg.resume and list_checkpoints(self.ckpt_dir):
            raise TrainError(f"out: {self.out} already holds checkpoints; pass --resume to continue that run "
                             "or choose another --out")

        init_model = MambaST.from_pretrained(cfg.init) if cfg.init else None
        mcfg = model_config(cfg.config)
        if init_model is not None:
            if cfg.config != "default" and mcfg != init_model.config:
                raise TrainError(f"config: --config {cfg.config} differs from the config of --init {cfg.init}")
            mcfg = init_model.config
        ckpt = self._resume_checkpoint(self._largest(mcfg))   # after the config: it bounds what the file may hold
        if ckpt is not None:
            saved = MambaSTConfig.from_dict(ckpt["model_config"])
            if saved != mcfg:
                raise TrainError("config: the model config differs from the checkpoint's; pass the run's --config")
        torch.manual_seed(cfg.seed)
        self.model = model = MambaST(mcfg)
        if init_model is not None:
            model.load_state_dict(init_model.state_dict())
        model.to(device).train()

        vgg = (self._vgg if self._vgg is not None else load_vgg19(path=cfg.vgg or None)).to(device).eval()
        self.criterion = StyleTransferLoss(vgg, cfg.content_weight, cfg.style_weight,
                                           cfg.identity1_weight, cfg.identity2_weight)
        # fused on CUDA: the same Adam update in a few kernels instead of one per operation and tensor group
        self.opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, fused=device.type == "cuda")

        self.step = cfg.init_step if init_model is not None else 0
        per_step = cfg.batch_size * self.dist.world_size
        seen = {"content": self.step * per_step, "style": self.step * per_step}
        rng = None
        if ckpt is not None:
            model.load_state_dict(ckpt["model"])
            self.opt.load_state_dict(ckpt["optimizer"])
            for group in self.opt.param_groups:
                group["lr"] = cfg.lr
            self.step = int(ckpt["step"])
            seen = dict(ckpt["data"]["seen"])
            if self.dist.is_main and (moved := set_aside_later_checkpoints(self.ckpt_dir, self.step)):
                self._say(f"moved {len(moved)} checkpoint(s) past step {self.step} to {moved[0].parent} (kept, not "
                          "resumed): this run writes its own")
            old_world = int(ckpt.get("world_size", self.dist.world_size))
            old_batch = int(ckpt.get("train_config", {}).get("batch_size", cfg.batch_size))
            if old_world * old_batch != per_step:
                self._say(f"the checkpoint trained with {old_world} process(es) x batch {old_batch}, this run uses "
                          f"{self.dist.world_size} x {cfg.batch_size}: the global batch changes from "
                          f"{old_world * old_batch} to {per_step} images per step (the learning rate is not rescaled)")
            if len(ckpt["rng"]) == self.dist.world_size:
                rng = ckpt["rng"][self.dist.rank]
            else:
                self._say(f"checkpoint has {len(ckpt['rng'])} RNG states for {self.dist.world_size} processes: reseeding")
        elif init_model is not None:
            self._say(f"weights from {cfg.init} (step {self.step}); Adam state starts afresh")

        streams = {}
        for i, (name, files) in enumerate((("content", content_files), ("style", style_files))):
            data = TrainImages(files, cfg.size, cfg.crop, cfg.resize, cfg.scale_jitter, cfg.flip, seed=2 * cfg.seed + i)
            streams[name] = ImageStream(data, cfg.batch_size, cfg.workers, seed=2 * cfg.seed + i, start=seen[name],
                                        rank=self.dist.rank, world_size=self.dist.world_size,
                                        pin_memory=device.type == "cuda")
        self.content, self.style = streams["content"], streams["style"]
        self.skipped_before = int(ckpt["data"].get("skipped", 0)) if ckpt is not None else 0
        if self.dist.is_main and cfg.sample_every:
            n = min(cfg.n_samples, len(content_files), len(style_files))
            self.sample_content = fixed_batch(content_files, n, cfg.crop)
            self.sample_style = fixed_batch(style_files, n, cfg.crop)

        # the training randomness (DropPath, style shuffles) comes from the global RNGs, restored last
        if rng is not None:
            set_rng_state(rng, device)
        else:
            _seed_all(cfg.seed * 100_003 + self.dist.rank * 1009 + self.step + 1)

        # parts (patch_embed, encoder_c, ...) not yet seen with a nonzero gradient, watched over the first steps
        self._no_gradient_yet = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
        self._watch_steps = GRADIENT_WATCH_STEPS

        self.forward_model = model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel
            self.forward_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        self.loss_fn = self.criterion
        if cfg.compile:
            self.forward_model = torch.compile(self.forward_model)
            # the loss network too: eager, its reflection paddings and cuDNN's layout conversions made it about a
            # quarter of a batch-8 step on an H100 (docs/performance.md)
            self.loss_fn = torch.compile(self.criterion)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

        n_params = sum(p.numel() for p in model.parameters())
        self._say(f"{len(content_files)} content and {len(style_files)} style images; model {n_params / 1e6:.2f} M "
                  f"parameters; device {device}, {self.dist.world_size} process(es); step {self.step} of {cfg.steps}")
        if self.step >= cfg.steps:
            self._say(f"step {self.step} already reaches --steps {cfg.steps}: nothing to train (raise --steps to go on)")
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / RUN_CONFIG).write_text(json.dumps(
                {"train": cfg.to_dict(), "model": mcfg.to_dict()}, indent=2, sort_keys=True) + "\n")

    # ------------------------------------------------------------------ one step
    def _autocast(self):
        if self.device.type == "cuda" and self.cfg.amp:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _next_images(self, stream: ImageStream) -> torch.Tensor:
        return next(stream).to(self.device, non_blocking=True).float().div_(255.0)   # uint8 -> [B, 3, h, w] in [0, 1]

    def train_step(self, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """One Adam step on a batch; returns the detached terms [total, content, style, identity1, identity2].

        The stylization O = model(Ic, Is) and the identity passes Icc = model(Ic, Ic), Iss = model(Is, Is)
        run as one batch of 3B: each image is processed independently, so this equals three calls up to
        the random draws (one style-shuffle permutation per layer is shared by the batch); the encoders see each
        image once (`MambaST.forward(..., identities=True)`).
        """
        B = content.shape[0]
        with self._autocast():
            out, icc, iss = self.forward_model(content, style, identities=True).split(B)
            terms = self.loss_fn(content, style, out, icc, iss)
        self.opt.zero_grad(set_to_none=True)
        terms["total"].backward()
        if self._watch_steps and self._no_gradient_yet:
            self._check_every_part_gets_gradients()
        self.opt.step()
        return torch.stack([terms[k].detach().float() for k in LOG_TERMS])

    def _check_every_part_gets_gradients(self) -> None:
        """Over a run's first steps every part of the model must get a nonzero gradient once: a part that gets none
        does not train, and the loss would not show it (a compiled step once cut the style encoder off silently).
        Watched for up to GRADIENT_WATCH_STEPS steps, so that DropPath is unlikely to cut a part off in all of them."""
        sums: dict[str, torch.Tensor] = {}
        for name, p in self.model.named_parameters():
            part = name.split(".")[0]
            if part in self._no_gradient_yet and p.grad is not None:
                sums[part] = sums.get(part, 0) + p.grad.detach().float().abs().sum()
        # != 0: a NaN gradient counts as reached (the non-finite loss check names that failure)
        self._no_gradient_yet -= {part for part, total in sums.items() if total != 0}
        self._watch_steps -= 1
        if self._watch_steps == 0 and self._no_gradient_yet:
            missing = sorted(self._no_gradient_yet)
            last = self.step + 1
            raise TrainError(f"no gradient reached {', '.join(missing)} in steps {last - GRADIENT_WATCH_STEPS + 1}-"
                             f"{last}: {'it' if len(missing) == 1 else 'they'} would not train"
                             + (" (try without --compile)" if self.cfg.compile else ""))

    # ------------------------------------------------------------------ bookkeeping
    def _checkpoint(self) -> None:
        rngs = ddp.gather(rng_state(self.device), self.dist)
        self._last_ckpt = self.step  # on every rank: the end-of-run test must agree across ranks
        if not self.dist.is_main:
            return
        skipped = self.skipped_before + self._skipped_total
        payload = {"step": self.step, "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                   "rng": rngs, "data": {"seen": {"content": self.content.seen, "style": self.style.seen},
                                         "skipped": skipped},
                   "train_config": self.cfg.to_dict(), "model_config": self.model.config.to_dict(),
                   "world_size": self.dist.world_size}
        save_checkpoint(payload, self.ckpt_dir / checkpoint_name(self.step))
        prune_checkpoints(self.ckpt_dir, self.cfg.keep_last)
        self._last_ckpt = self.step

    @torch.no_grad()
    def write_samples(self) -> Path:
        """Grid of rows content | style | output | identity (Icc) for the fixed pairs; global RNG untouched."""
        from PIL import Image

        from ..io import save_image
        model, was_training = self.model, self.model.training
        model.eval()
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), self._autocast():
            c, s = self.sample_content.to(self.device), self.sample_style.to(self.device)
            out = model(c, s, generator=torch.Generator().manual_seed(self.cfg.seed))
            icc = model(c, c, generator=torch.Generator().manual_seed(self.cfg.seed))
        model.train(was_training)
        rows = torch.cat([c, s, out.float(), icc.float()], dim=3)                          # [n, 3, h, 4w]
        grid = torch.cat(list(rows), dim=1).clamp(0, 1)                                    # [3, n*h, 4w]
        img = Image.fromarray((grid * 255 + 0.5).byte().permute(1, 2, 0).cpu().numpy())
        path = self.out / "samples" / f"step_{self.step:08d}.png"
        save_image(img, path)
        save_image(img, self.out / "samples" / "latest.png")
        return path

    def _open_log(self):
        path = self.out / "log.csv"
        rows = []
        if path.exists():  # keep the rows up to the resumed step (a crash may have logged past the checkpoint)
            with open(path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if r.get("step", "").isdigit() and int(r["step"]) <= self.step]
        f = open(path, "w", newline="")
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        f.flush()
        return f, writer

    def _on_signal(self, signum, frame) -> None:
        if self._signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop at once
        self._signal = signum
        self._say(f"received {signal.Signals(signum).name}: stopping after this step and writing a checkpoint")

    @contextlib.contextmanager
    def _signals(self):
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in old.items():
                signal.signal(s, h)

    # ------------------------------------------------------------------ the loop
    def run(self) -> int:
        """Train until cfg.steps (or a signal); returns 0, or 128 + signal number when stopped by a signal."""
        self._created_group = ddp.init(self.dist, self.device)
        finished = False
        try:
            with self._signals():
                self._setup()
                self._loop()
            finished = True
        finally:
            for stream in ("content", "style"):
                if hasattr(self, stream):
                    getattr(self, stream).close()
            if hasattr(self, "forward_model"):   # the DDP wrapper's reducer holds the process group: let it go first
                self.forward_model = self.model
            ddp.shutdown(self._created_group, finished)
        return 128 + self._signal if self._signal is not None else 0

    def _loop(self) -> None:
        cfg, main = self.cfg, self.dist.is_main
        self._skipped_total, self._last_ckpt = 0, self.step
        log_file, writer = self._open_log() if main else (None, None)
        tb = self._tensorboard() if main and cfg.tensorboard else None
        bar = None
        if main and cfg.progress and sys.stderr.isatty():
            from tqdm import tqdm
            bar = tqdm(total=cfg.steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True)
        running = torch.zeros(len(LOG_TERMS), device=self.device)
        count, t_log, t0 = 0, time.perf_counter(), time.perf_counter()
        stop = False
        profile_at = self.step + cfg.profile if cfg.profile and main else None
        profiler = None
        if profile_at is not None and profile_at + PROFILE_STEPS > cfg.steps:
            self._say(f"--profile {cfg.profile}: this run ends at step {cfg.steps}, before the {PROFILE_STEPS} steps "
                      f"after step {profile_at}; no profile")
        try:
            while self.step < cfg.steps and not stop:
                if self.step == profile_at:
                    profiler = self._start_profiler()
                try:
                    content, style = self._next_images(self.content), self._next_images(self.style)
                except RuntimeError:
                    if self._signal is None:   # loader workers die first on Ctrl-C in a terminal
                        raise
                    stop = True
                    break
                running += self.train_step(content, style)
                count += 1
                self.step += 1
                if profiler is not None and self.step == profile_at + PROFILE_STEPS:
                    profiler, done = None, profiler
                    self._write_profile(done, profile_at)
                if bar is not None:
                    bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == cfg.steps:
                    values = (ddp.mean_over_ranks(running / count, self.dist)).tolist()
                    skipped = int(ddp.sum_over_ranks(torch.tensor([self.content.skipped + self.style.skipped],
                                                                  device=self.device), self.dist).item())
                    self._skipped_total = skipped
                    if not all(math.isfinite(v) for v in values):
                        last = self.ckpt_dir / checkpoint_name(self._last_ckpt)
                        raise TrainError(f"loss is not finite at step {self.step} ({values}); " + (
                            f"last checkpoint: {last}" if last.exists() else "no checkpoint written yet"))
                    now = time.perf_counter()
                    row = dict(zip(LOG_TERMS, (f"{v:.6g}" for v in values)), step=self.step, lr=f"{cfg.lr:g}",
                               it_per_s=f"{count / (now - t_log):.3f}", skipped_files=self.skipped_before + skipped,
                               elapsed_s=f"{now - t0:.1f}")
                    if main:
                        writer.writerow(row)
                        log_file.flush()
                        short = {k: f"{v:.4g}" for k, v in zip(LOG_TERMS, values)}
                        if bar is not None:
                            bar.set_postfix(short, refresh=False)
                        elif self.step % cfg.print_every < cfg.log_every or self.step == cfg.steps:
                            self._say(f"step {self.step}/{cfg.steps} " + " ".join(f"{k} {v}" for k, v in short.items())
                                      + f" | {row['it_per_s']} it/s")
                        if tb is not None:
                            for k, v in zip(LOG_TERMS, values):
                                tb.add_scalar(f"loss/{k}", v, self.step)
                    running.zero_()
                    count, t_log = 0, now
                stop = ddp.any_true(self._signal is not None, self.dist, self.device)
                if cfg.ckpt_every and self.step % cfg.ckpt_every == 0 and not stop:
                    self._checkpoint()
                if main and cfg.sample_every and self.step % cfg.sample_every == 0:
                    self.write_samples()
            if self._last_ckpt != self.step:
                self._checkpoint()
            if main:
                self.model.save_pretrained(self.out / "model")
                how = f"stopped by {signal.Signals(self._signal).name}" if self._signal is not None else "finished"
                self._say(f"{how} at step {self.step}; checkpoint in {self.ckpt_dir}, weights in {self.out / 'model'}")
        finally:
            if profiler is not None:      # the run ended inside the profiled steps
                profiler.stop()
            if bar is not None:
                bar.close()
            if log_file is not None:
                log_file.close()
            if tb is not None:
                tb.close()

    def _start_profiler(self):
        from torch.profiler import ProfilerActivity, profile
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.device.type == "cuda" else [])
        profiler = profile(activities=activities)
        profiler.start()
        self._profile_t0 = time.perf_counter()
        return profiler

    def _write_profile(self, profiler, first: int) -> Path:
        """The profiled steps' operator and kernel table, most own time first, into OUT/profile.txt."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        wall_ms = (time.perf_counter() - self._profile_t0) * 1e3 / PROFILE_STEPS
        profiler.stop()
        key = "self_cuda_time_total" if self.device.type == "cuda" else "self_cpu_time_total"
        table = profiler.key_averages().table(sort_by=key, row_limit=60, max_name_column_width=80)
        path = self.out / "profile.txt"
        text = (f"steps {first + 1}-{first + PROFILE_STEPS}, batch {self.cfg.batch_size}, crop {self.cfg.crop}, "
                f"compile {self.cfg.compile}, device {self.device}: {wall_ms:.1f} ms per step under the profiler "
                f"(data loading included); times are totals over {PROFILE_STEPS} steps\n{table}")
        atomic_write(path, lambda tmp: Path(tmp).write_text(text))
        self._say(f"profile of steps {first + 1}-{first + PROFILE_STEPS} in {path}")
        return path

    def _tensorboard(self):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            self._say("tensorboard is not installed: logging to log.csv only")
            return None
        return SummaryWriter(str(self.out / "tensorboard"))


def train(cfg: TrainConfig, vgg: nn.Module | None = None) -> int:
    """Run training as configured; returns the exit code (0, or 128 + signal number if stopped)."""
    return Trainer(cfg, vgg=vgg).run()
