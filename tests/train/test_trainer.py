"""The training loop on CPU with a tiny model and a tiny random VGG: exact resume, checkpoints, signals, CLI."""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from mambast.networks.vgg import VGG19Features
from mambast.train.checkpoint import list_checkpoints, load_checkpoint
from mambast.train.cli import add_config_arguments, config_from_args, register
from mambast.train.config import TrainConfig, TrainError
from mambast.train.losses import TERMS
from mambast.train.trainer import Trainer

REPO = Path(__file__).resolve().parents[2]


def make_images(root: Path, n: int = 6) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    for kind in ("content", "style"):
        for i in range(n):
            (root / kind).mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (40 + 3 * i, 48, 3), dtype=np.uint8)).save(root / kind / f"{i}.png")
    return root / "content", root / "style"


def tiny_vgg() -> VGG19Features:
    torch.manual_seed(123)
    return VGG19Features((4, 8, 8, 8, 8))


def config(tmp: Path, out: str, **kw) -> TrainConfig:
    content, style = make_images(tmp / "data")
    base = dict(content=str(content), style=str(style), out=str(tmp / out), steps=4, batch_size=2, size=48,
                crop=32, workers=0, config="tiny", ckpt_every=2, sample_every=0, log_every=1, progress=False)
    base.update(kw)
    return TrainConfig(**base)


def model_state(out: Path) -> dict:
    return load_checkpoint(list_checkpoints(out / "checkpoints")[-1])["model"]


def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path):
    assert Trainer(config(tmp_path, "full"), vgg=tiny_vgg()).run() == 0
    assert Trainer(config(tmp_path, "split", steps=2), vgg=tiny_vgg()).run() == 0
    assert Trainer(config(tmp_path, "split", resume="latest"), vgg=tiny_vgg()).run() == 0

    full, split = load_checkpoint(tmp_path / "full/checkpoints/step_00000004.pt"), \
        load_checkpoint(tmp_path / "split/checkpoints/step_00000004.pt")
    assert full["step"] == split["step"] == 4
    for k, v in full["model"].items():
        assert torch.equal(v, split["model"][k]), k
    for a, b in zip(full["optimizer"]["state"].values(), split["optimizer"]["state"].values()):
        assert torch.equal(a["exp_avg"], b["exp_avg"]) and torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])
    assert full["data"]["seen"] == split["data"]["seen"] == {"content": 8, "style": 8}
    log = (tmp_path / "split/log.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in log[1:]] == ["1", "2", "3", "4"]
    assert log[1:] != [] and all("nan" not in r for r in log)
    assert (tmp_path / "split/model/config.json").exists()


def test_training_changes_the_weights_and_keeps_the_last_checkpoints(tmp_path):
    cfg = config(tmp_path, "run", steps=3, ckpt_every=1, keep_last=2)
    trainer = Trainer(cfg, vgg=tiny_vgg())
    assert trainer.run() == 0
    assert [p.name for p in list_checkpoints(tmp_path / "run/checkpoints")] == ["step_00000002.pt", "step_00000003.pt"]
    with pytest.raises(TrainError, match="already holds checkpoints"):
        Trainer(cfg, vgg=tiny_vgg()).run()
    torch.manual_seed(cfg.seed)
    from mambast.model import MambaST
    from mambast.train.config import model_config
    init = MambaST(model_config("tiny")).state_dict()
    trained = model_state(tmp_path / "run")
    assert any(not torch.equal(init[k], trained[k]) for k in init)
    assert sorted(init) == sorted(trained)


def test_resume_sets_aside_checkpoints_past_its_step(tmp_path, capsys):
    """Checkpoints past the resumed step (a damaged newer file passed over, or an abandoned run's when resuming from
    an older file) are moved aside, not pruned in place of the new ones nor resumed by a later --resume."""
    ckpts = tmp_path / "run/checkpoints"
    assert Trainer(config(tmp_path, "run", steps=4, ckpt_every=2), vgg=tiny_vgg()).run() == 0
    (ckpts / "step_00000099.pt").write_bytes(b"")                        # damaged, newest by its name
    assert Trainer(config(tmp_path, "run", steps=5, keep_last=1, resume="latest"), vgg=tiny_vgg()).run() == 0
    assert [p.name for p in list_checkpoints(ckpts)] == ["step_00000005.pt"]
    assert load_checkpoint(ckpts / "step_00000005.pt")["step"] == 5
    assert [p.name for p in list_checkpoints(ckpts / "set-aside")] == ["step_00000099.pt"]
    assert "moved 1 checkpoint(s) past step 4" in capsys.readouterr().err

    assert Trainer(config(tmp_path, "again", steps=6, ckpt_every=2, keep_last=5), vgg=tiny_vgg()).run() == 0
    older = tmp_path / "again/checkpoints/step_00000002.pt"
    assert Trainer(config(tmp_path, "again", steps=3, ckpt_every=1, keep_last=5, resume=str(older)),
                   vgg=tiny_vgg()).run() == 0
    assert [p.name for p in list_checkpoints(tmp_path / "again/checkpoints")] == ["step_00000002.pt",
                                                                                   "step_00000003.pt"]
    assert [p.name for p in list_checkpoints(tmp_path / "again/checkpoints/set-aside")] == ["step_00000004.pt",
                                                                                             "step_00000006.pt"]


@pytest.mark.parametrize("good_steps, says", [(0, "no checkpoint written yet"),
                                              (2, "last checkpoint: .*step_00000002.pt")])
def test_a_loss_that_is_not_finite_stops_the_run_naming_the_last_checkpoint(tmp_path, good_steps, says):
    trainer = Trainer(config(tmp_path, "run", steps=4, ckpt_every=2), vgg=tiny_vgg())
    real, calls = trainer.train_step, []

    def step(c, s):
        calls.append(1)
        return real(c, s) if len(calls) <= good_steps else torch.full((len(TERMS) + 1,), float("nan"))
    trainer.train_step = step
    with pytest.raises(TrainError, match=f"loss is not finite at step {good_steps + 1} .*; {says}"):
        trainer.run()


def test_sample_grid_is_written(tmp_path):
    cfg = config(tmp_path, "s", steps=2, sample_every=2, n_samples=3)
    assert Trainer(cfg, vgg=tiny_vgg()).run() == 0
    img = Image.open(tmp_path / "s/samples/latest.png")
    assert img.size == (4 * 32, 3 * 32)
    assert (tmp_path / "s/samples/step_00000002.png").exists()


def test_profile_records_three_steps_and_a_short_run_ends_without_one(tmp_path, capsys):
    assert Trainer(config(tmp_path, "p", steps=5, profile=1), vgg=tiny_vgg()).run() == 0
    text = (tmp_path / "p/profile.txt").read_text()
    assert text.startswith("steps 2-4, batch 2, crop 32") and "aten::" in text and "Self CPU" in text
    assert Trainer(config(tmp_path, "q", steps=3, profile=1), vgg=tiny_vgg()).run() == 0   # ends mid-profile
    assert not (tmp_path / "q/profile.txt").exists() and (tmp_path / "q/model").is_dir()
    assert "no profile" in capsys.readouterr().err
    assert not torch.autograd.profiler._is_profiler_enabled      # the profiler was stopped with the run
    with pytest.raises(TrainError, match="profile"):
        config(tmp_path, "r", profile=-1)


def test_resume_with_a_different_model_config_is_refused(tmp_path):
    assert Trainer(config(tmp_path, "r", steps=1), vgg=tiny_vgg()).run() == 0
    other = config(tmp_path, "r", steps=2, resume="latest", config='{"dim": 16, "depth_encoder": 1, '
                   '"depth_decoder": 1, "d_state": 4, "decoder_channels": [16, 8, 8]}')
    with pytest.raises(TrainError, match="differs"):
        Trainer(other, vgg=tiny_vgg()).run()


def test_resume_with_a_smaller_config_is_refused_for_the_config_not_as_damage(tmp_path, monkeypatch):
    # without the slack, the tiny run's checkpoint is larger than a run of the smaller config may write: it must
    # still be read (bounded by the run's recorded config) and refused for its config, not skipped as damaged
    monkeypatch.setattr("mambast.loading.PTH_SLACK", 0)
    assert Trainer(config(tmp_path, "r", steps=1), vgg=tiny_vgg()).run() == 0
    smaller = config(tmp_path, "r", steps=2, resume="latest", config='{"dim": 16, "depth_encoder": 1, '
                     '"depth_decoder": 1, "d_state": 4, "decoder_channels": [16, 8, 8]}')
    with pytest.raises(TrainError, match="the model config differs from the checkpoint's"):
        Trainer(smaller, vgg=tiny_vgg()).run()


@pytest.mark.parametrize("workers,to_group", [(0, False), (1, True)])
def test_sigterm_writes_a_checkpoint_and_exports(tmp_path, workers, to_group):
    """SIGTERM to the trainer, or to its whole process group with loader workers in it (as torchrun and Ctrl-C in a
    terminal send it): the step finishes, a checkpoint and the model are written, the exit code says SIGTERM."""
    content, style = make_images(tmp_path / "data")
    vgg_path = tmp_path / "vgg.safetensors"
    save_file(tiny_vgg().state_dict(), str(vgg_path))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "mambast.train", "--content", str(content), "--style", str(style), "--out", str(out),
           "--steps", "100000", "--batch-size", "2", "--size", "48", "--crop", "32", "--workers", str(workers),
           "--config", "tiny", "--vgg", str(vgg_path), "--ckpt-every", "0", "--sample-every", "0", "--log-every", "1"]
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=to_group)
    try:
        deadline = time.time() + 60
        log = out / "log.csv"
        while time.time() < deadline and proc.poll() is None:
            if log.exists() and len(log.read_text().splitlines()) >= 3:   # header + 2 steps
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.stdout.read()
        if to_group:
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM, output
    ckpts = list_checkpoints(out / "checkpoints")
    assert len(ckpts) == 1, output
    ckpt = load_checkpoint(ckpts[0])
    assert ckpt["step"] >= 2
    assert (out / "model" / "config.json").exists()
    assert "SIGTERM" in output


def test_cli_flags_come_from_train_config():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    register(sub)
    args = parser.parse_args(["train", "--content", "c", "--style", "s", "--out", "o"])
    cfg = config_from_args(args)
    defaults = TrainConfig(content="c", style="s", out="o")
    assert cfg == defaults
    assert (cfg.batch_size, cfg.lr, cfg.size, cfg.crop, cfg.steps) == (8, 1e-4, 512, 256, 160_000)
    assert callable(args.func)
    args = parser.parse_args(["train", "--content", "c", "--style", "s", "--out", "o", "--no-flip", "--resume",
                              "--batch-size", "4", "--scale-jitter", "0.25", "--config", "tiny"])
    cfg = config_from_args(args)
    assert (cfg.flip, cfg.resume, cfg.batch_size, cfg.scale_jitter, cfg.config) == (False, "latest", 4, 0.25, "tiny")
    p = argparse.ArgumentParser()
    add_config_arguments(p)
    flags = {a.dest for a in p._actions}
    assert {f.name for f in dataclasses.fields(TrainConfig)} <= flags


def test_bad_settings_are_one_line_errors(tmp_path):
    with pytest.raises(TrainError, match="crop"):
        TrainConfig(content="c", style="s", out="o", size=256, crop=300)
    with pytest.raises(TrainError, match="batch_size"):
        TrainConfig(content="c", style="s", out="o", batch_size=0)
    with pytest.raises(TrainError, match="crop must be at least 32"):   # the VGG-19 loss would fail at relu5_1
        TrainConfig(content="c", style="s", out="o", size=64, crop=16)
    for name, value in [("lr", float("nan")), ("lr", float("inf")), ("style_weight", float("nan")),
                        ("identity1_weight", float("inf")), ("content_weight", -1.0)]:
        with pytest.raises(TrainError, match=f"{name} must be a finite number >= 0"):
            TrainConfig(content="c", style="s", out="o", **{name: value})
    with pytest.raises(TrainError, match="evaluation"):
        Trainer(config(tmp_path, "x", content=str(tmp_path / "eval-set")), vgg=tiny_vgg()).run()


def test_init_from_exported_weights_continues_step_numbering(tmp_path, capfd):
    assert Trainer(config(tmp_path, "first", steps=2), vgg=tiny_vgg()).run() == 0
    cfg = config(tmp_path, "second", steps=3, init=str(tmp_path / "first" / "model"), init_step=2)
    trainer = Trainer(cfg, vgg=tiny_vgg())
    assert trainer.run() == 0
    assert "Adam state starts afresh" in capfd.readouterr().err
    assert trainer.step == 3 and trainer.content.seen == 3 * 2
    log = (tmp_path / "second/log.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in log[1:]] == ["3"]


def test_resume_past_the_steps_asked_for_says_there_is_nothing_to_train(tmp_path, capsys):
    assert Trainer(config(tmp_path, "r", steps=2), vgg=tiny_vgg()).run() == 0
    before = model_state(tmp_path / "r")
    assert Trainer(config(tmp_path, "r", steps=1, resume="latest"), vgg=tiny_vgg()).run() == 0
    assert "step 2 already reaches --steps 1: nothing to train" in capsys.readouterr().err
    assert all(torch.equal(v, model_state(tmp_path / "r")[k]) for k, v in before.items())


def test_resume_with_another_global_batch_says_so(tmp_path, capsys):
    assert Trainer(config(tmp_path, "b", steps=1), vgg=tiny_vgg()).run() == 0
    capsys.readouterr()
    assert Trainer(config(tmp_path, "b", steps=2, batch_size=3, resume="latest"), vgg=tiny_vgg()).run() == 0
    out = capsys.readouterr()
    assert "global batch changes from 2 to 3" in out.out + out.err


@pytest.mark.parametrize("cut", [lambda out: out.detach(), lambda out: out * 0], ids=["no-gradient", "zero-gradient"])
def test_a_part_of_the_model_without_gradients_stops_the_run(tmp_path, cut):
    """A model part cut off from the loss (here the style encoder's output detached, or multiplied by 0: gradients
    of zeros, as the broken compiled step gave) trains nothing while the loss still falls: the first steps check
    that every part gets a gradient."""
    from mambast.train.trainer import GRADIENT_WATCH_STEPS
    trainer = Trainer(config(tmp_path, "run"), vgg=tiny_vgg())
    trainer._setup()
    try:
        trainer.model.encoder_s.register_forward_hook(lambda module, args, out: cut(out))
        c, s = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
        for _ in range(GRADIENT_WATCH_STEPS - 1):
            trainer.train_step(c, s)
            trainer.step += 1
        with pytest.raises(TrainError, match=f"no gradient reached encoder_s in steps 1-{GRADIENT_WATCH_STEPS}: it "
                                             "would not train"):
            trainer.train_step(c, s)
    finally:
        for stream in (trainer.content, trainer.style):
            stream.close()


# (amp, loss tolerance, gradient tolerance per part): in float32 with TF32 off the two steps differ only by the
# order of additions (fusions, the scan's atomics, cuDNN's algorithms); under bf16 autocast by bf16 rounding,
# which the backward amplifies.
STEP_TOLERANCES = [(False, 1e-4, 1e-3), (True, 3e-2, 5e-2)]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("amp, loss_rel, grad_rel", STEP_TOLERANCES, ids=["fp32", "bf16"])
def test_gpu_compiled_training_step_gives_the_eager_losses_and_gradients(tmp_path, monkeypatch, amp, loss_rel,
                                                                         grad_rel):
    """One training step with the model through torch.compile against the eager step: same weights, same loss
    network, same images, no random draws (eval mode, no shuffle); each loss term and each part's gradients
    within rounding (float32: tight, so that a wrong compiled step cannot hide in bf16 noise; bf16 autocast, as
    training runs)."""
    from mambast.model import MambaST
    torch.manual_seed(0)
    reference_state = MambaST().state_dict()
    vgg = VGG19Features()                      # one loss network (random weights) for both runs

    def step(compile):
        trainer = Trainer(config(tmp_path, f"run-{compile}", device="cuda", config="default", compile=compile,
                                 amp=amp), vgg=vgg)
        trainer._setup()
        if not amp:                            # the trainer turns TF32 on; float32 here means float32
            monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
            monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
        trainer.model.load_state_dict(reference_state)
        trainer.model.eval()                   # no DropPath draws and
        trainer.model.config = dataclasses.replace(trainer.model.config, shuffle=False)   # no permutation draws
        torch.manual_seed(0)
        c, s = torch.rand(2, 3, 32, 32, device="cuda"), torch.rand(2, 3, 32, 32, device="cuda")
        terms = trainer.train_step(c, s)
        groups = {}   # per top-level part: the CNN decoder's gradients would hide a wrong encoder's
        for name, p in trainer.model.named_parameters():
            if p.grad is not None:
                groups.setdefault(name.split(".")[0], []).append(p.grad.flatten().float())
        for stream in (trainer.content, trainer.style):
            stream.close()
        return terms, {k: torch.cat(v) for k, v in groups.items()}

    terms_ref, g_ref = step(False)
    terms, g = step(True)
    for name, a, b in zip(("total",) + TERMS, terms.tolist(), terms_ref.tolist()):
        assert a == pytest.approx(b, rel=loss_rel, abs=1e-6), name
    assert g.keys() == g_ref.keys()
    for part in g_ref:
        assert g_ref[part].norm() > 0, part
        assert ((g[part] - g_ref[part]).norm() / g_ref[part].norm()).item() < grad_rel, part


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_compiled_training_runs_with_shuffle_and_droppath(tmp_path):
    """--compile trains as the recipe does (train mode, style shuffle drawn inside the compiled forward)."""
    cfg = config(tmp_path, "run", device="cuda", config="default", compile=True, steps=3, ckpt_every=0)
    assert Trainer(cfg, vgg=VGG19Features()).run() == 0
    rows = (tmp_path / "run" / "log.csv").read_text().splitlines()[1:]
    assert len(rows) == 3 and all(math.isfinite(float(r.split(",")[1])) for r in rows)
