"""Training checkpoints as untrusted files: checksummed, checked field by field, damaged ones named in one line,
`--resume latest` falling back to the newest valid one, and a full disk leaving the earlier ones as they were."""

from __future__ import annotations

import resource
import signal
import struct
import zipfile

import pytest
import torch

from conftest import tiny_config
from mambast.model import MambaST
from mambast.train.checkpoint import list_checkpoints, load_checkpoint, rng_state, save_checkpoint
from mambast.train.config import TrainError
from mambast.train.trainer import Trainer
from test_trainer import REPO, config, make_images, tiny_vgg


def payload() -> dict:
    """What the trainer saves, for a tiny model after one Adam step (so that Adam holds its moments)."""
    torch.manual_seed(0)
    model = MambaST(tiny_config())
    opt = torch.optim.Adam(model.parameters())
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    return {"step": 3, "model": model.state_dict(), "optimizer": opt.state_dict(), "rng": [rng_state()],
            "data": {"seen": {"content": 6, "style": 6}, "skipped": 0}, "train_config": {"batch_size": 2},
            "model_config": model.config.to_dict(), "world_size": 1}


def flip_a_tensor_byte(path) -> None:
    """Flip one bit in the middle of the largest tensor's bytes (stored uncompressed in torch's zip)."""
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    data = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26:info.header_offset + 30])
    data[info.header_offset + 30 + name_len + extra_len + info.file_size // 2] ^= 0x10
    path.write_bytes(bytes(data))


def test_a_saved_checkpoint_loads_back(tmp_path):
    save_checkpoint(payload(), tmp_path / "step_00000003.pt")
    ckpt = load_checkpoint(tmp_path / "step_00000003.pt")
    assert ckpt["step"] == 3 and torch.equal(ckpt["model"]["decoder.norm.weight"],
                                             payload()["model"]["decoder.norm.weight"])


def test_flipped_bytes_are_caught_by_the_checksum(tmp_path):
    path = tmp_path / "step_00000003.pt"
    save_checkpoint(payload(), path)
    flip_a_tensor_byte(path)
    torch.load(path, weights_only=True)   # torch reads it without a word: the zip's CRC is not checked
    with pytest.raises(TrainError, match=r"step_00000003\.pt: its payload does not match its checksum") as e:
        load_checkpoint(path)
    assert "\n" not in str(e.value)


def test_an_empty_checkpoint_is_a_one_line_error_naming_it(tmp_path):
    (tmp_path / "step_00000001.pt").touch()
    with pytest.raises(TrainError, match=r"step_00000001\.pt: empty file"):
        load_checkpoint(tmp_path / "step_00000001.pt")


def _drop(key):
    return lambda ck: ck.pop(key)


def _set(*keys, value):
    def change(ck):
        for k in keys[:-1]:
            ck = ck[k]
        ck[keys[-1]] = value
    return change


def _reshape_a_tensor(ck):
    ck["model"]["decoder.norm.weight"] = torch.zeros(7)


def _reshape_a_moment(ck):
    ck["optimizer"]["state"][0]["exp_avg"] = torch.zeros(5)


@pytest.mark.parametrize("damage, field", [
    (_drop("model_config"), "field model_config"),
    (_set("model_config", "dim", value="x"), "field model_config"),
    (_set("model_config", "depth_encoder", value=100000), "field model_config"),
    (_reshape_a_tensor, r"field model: key decoder\.norm\.weight has shape"),
    (_set("step", value="abc"), "field step"),
    (_set("world_size", value=0), "field world_size"),
    (_drop("rng"), "field rng"),
    (_set("rng", value=[{"python": 1}]), r"field rng\[0\]"),
    (_set("rng", value=[{**rng_state(), "torch": torch.zeros(3)}]), r"field rng\[0\]"),
    (_drop("data"), "field data"),
    (_set("data", "seen", value={"content": 6}), "field data.seen"),
    (_set("data", "seen", "style", value=-1), "field data.seen"),
    (_drop("optimizer"), "field optimizer is missing"),
    (_reshape_a_moment, "field optimizer: state 0.exp_avg has shape"),
    (_set("train_config", "batch_size", value="8"), "field train_config"),
])
def test_missing_or_wrong_fields_are_one_line_errors_naming_file_and_field(tmp_path, damage, field):
    ck = payload()
    damage(ck)
    save_checkpoint(ck, tmp_path / "step_00000003.pt")   # a correct checksum over damaged fields
    with pytest.raises(TrainError, match=r"step_00000003\.pt: " + field) as e:
        load_checkpoint(tmp_path / "step_00000003.pt")
    assert "\n" not in str(e.value) and "--resume latest" in str(e.value)


def test_a_checkpoint_from_before_checksums_loads_with_a_warning_and_its_fields_checked(tmp_path):
    torch.save({"format": "mambast-train-checkpoint", **payload()}, tmp_path / "step_00000003.pt")
    with pytest.warns(UserWarning, match="no payload checksum"):
        ckpt = load_checkpoint(tmp_path / "step_00000003.pt")
    assert ckpt["step"] == payload()["step"]
    bad = payload()
    bad["step"] = "abc"
    torch.save({"format": "mambast-train-checkpoint", **bad}, tmp_path / "step_00000004.pt")
    with pytest.warns(UserWarning), pytest.raises(TrainError, match=r"step_00000004\.pt: field step"):
        load_checkpoint(tmp_path / "step_00000004.pt")


def test_a_full_disk_while_saving_keeps_the_previous_checkpoint(tmp_path):
    """The file-size limit makes the write fail as a full disk does, inside torch's writer."""
    save_checkpoint(payload(), tmp_path / "step_00000002.pt")
    before = (tmp_path / "step_00000002.pt").read_bytes()
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) // 2, old_limit[1]))
    try:
        with pytest.raises(TrainError, match=r"cannot write .*step_00000004\.pt .*the checkpoints before it are kept") \
                as e:
            save_checkpoint(payload(), tmp_path / "step_00000004.pt")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)
    assert "\n" not in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000002.pt"]   # no temp file left
    assert (tmp_path / "step_00000002.pt").read_bytes() == before


def test_resume_latest_takes_the_newest_valid_checkpoint_and_says_so(tmp_path, capsys):
    assert Trainer(config(tmp_path, "run"), vgg=tiny_vgg()).run() == 0
    ckpts = list_checkpoints(tmp_path / "run" / "checkpoints")
    assert [p.name for p in ckpts] == ["step_00000002.pt", "step_00000004.pt"]
    flip_a_tensor_byte(ckpts[-1])
    capsys.readouterr()
    assert Trainer(config(tmp_path, "run", steps=5, resume="latest"), vgg=tiny_vgg()).run() == 0
    err = capsys.readouterr().err
    assert "step_00000004.pt: its payload does not match its checksum (damaged): trying the one before" in err
    assert f"resuming from {ckpts[0]} (the newest valid checkpoint; 1 newer skipped)" in err
    assert load_checkpoint(list_checkpoints(tmp_path / "run" / "checkpoints")[-1])["step"] == 5

    for p in list_checkpoints(tmp_path / "run" / "checkpoints"):
        p.write_bytes(b"")
    with pytest.raises(TrainError, match="none of the 3 checkpoints"):
        Trainer(config(tmp_path, "run", steps=6, resume="latest"), vgg=tiny_vgg()).run()


def test_a_model_field_of_non_tensors_is_named(tmp_path):
    ck = payload()
    ck["model"]["decoder.norm.weight"] = 3
    save_checkpoint(ck, tmp_path / "step_00000003.pt")
    with pytest.raises(TrainError, match="step_00000003.pt: field model: "):
        load_checkpoint(tmp_path / "step_00000003.pt")


def test_a_full_disk_while_training_is_a_one_line_error_and_the_run_resumes_later(tmp_path):
    """`python -m mambast.train` as a user runs it, its files limited in size as a full disk would limit them."""
    import os
    import subprocess
    import sys

    from safetensors.torch import save_file

    content, style = make_images(tmp_path / "data")
    save_file(tiny_vgg().state_dict(), str(tmp_path / "vgg.safetensors"))
    cmd = [sys.executable, "-m", "mambast.train", "--content", str(content), "--style", str(style), "--out",
           str(tmp_path / "run"), "--batch-size", "2", "--size", "48", "--crop", "32", "--workers", "0", "--config",
           "tiny", "--vgg", str(tmp_path / "vgg.safetensors"), "--ckpt-every", "2", "--sample-every", "0",
           "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    subprocess.run(cmd + ["--steps", "2"], check=True, cwd=REPO, env=env, capture_output=True)
    first = tmp_path / "run" / "checkpoints" / "step_00000002.pt"
    size = first.stat().st_size

    def small_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size // 2, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    done = subprocess.run(cmd + ["--steps", "4", "--resume"], cwd=REPO, env=env, capture_output=True, text=True,
                          preexec_fn=small_files)
    errors = [ln for ln in done.stderr.splitlines() if not ln.startswith("[train]")]
    assert done.returncode == 1 and len(errors) == 1, done.stderr
    assert "step_00000004.pt" in errors[0] and "the checkpoints before it are kept" in errors[0]
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["step_00000002.pt"]
    assert load_checkpoint(first)["step"] == 2
    subprocess.run(cmd + ["--steps", "4", "--resume"], check=True, cwd=REPO, env=env, capture_output=True)
    assert load_checkpoint(list_checkpoints(tmp_path / "run" / "checkpoints")[-1])["step"] == 4
