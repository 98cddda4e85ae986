"""A run exported in small pieces (scripts/remote/export.py) and merged back (merge.py): the model folder, and
the checkpoint that resumes exactly."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import torch

from mambast.config import MambaSTConfig
from mambast.model import MambaST
from mambast.train.checkpoint import load_checkpoint, rng_state, save_checkpoint

REPO = Path(__file__).resolve().parents[2]
REMOTE = REPO / "scripts" / "remote"
sys.path.insert(0, str(REMOTE))   # the helpers are scripts
from export import export  # noqa: E402
from merge import merge  # noqa: E402

TINY = dict(dim=32, depth_encoder=1, depth_decoder=1, d_state=4, decoder_channels=[16, 8, 8])


def test_export_and_merge_scripts_rebuild_the_model(tmp_path):
    torch.manual_seed(0)
    model = MambaST(MambaSTConfig(**TINY))
    save_checkpoint({"step": 7, "model": model.state_dict(), "model_config": model.config.to_dict(),
                     "optimizer": torch.optim.Adam(model.parameters()).state_dict(), "rng": [rng_state()],
                     "data": {"seen": {"content": 14, "style": 14}}, "world_size": 1,
                     "train_config": {"lr": 1e-4}}, tmp_path / "run" / "checkpoints" / "step_00000007.pt")
    run = [sys.executable, str(REMOTE / "export.py"), str(tmp_path / "run"), str(tmp_path / "back"),
           "--chunk-mib", "15.5", "--max-mib", "0"]          # weights only: the checkpoint does not fit
    subprocess.run(run, check=True, cwd=REPO, capture_output=True)
    assert not (tmp_path / "back" / "checkpoint").exists()
    merge_cmd = [sys.executable, str(REMOTE / "merge.py"), str(tmp_path / "back"), "--out", str(tmp_path / "model")]
    out = subprocess.run(merge_cmd, check=True, cwd=REPO, capture_output=True, text=True).stdout
    assert "--init-step 7" in out
    rebuilt = MambaST.from_pretrained(tmp_path / "model")
    assert rebuilt.config == model.config
    for k, v in model.state_dict().items():
        torch.testing.assert_close(rebuilt.state_dict()[k], v.bfloat16().float(), msg=k)


def trainer_helpers():
    """tests/train/test_trainer.py's tiny run set-up (config, tiny_vgg), loaded by path."""
    spec = importlib.util.spec_from_file_location("trainer_helpers", REPO / "tests" / "train" / "test_trainer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_checkpoint_that_comes_back_resumes_exactly(tmp_path):
    from mambast.train.trainer import Trainer
    helpers = trainer_helpers()
    config, tiny_vgg = helpers.config, helpers.tiny_vgg
    assert Trainer(config(tmp_path, "full"), vgg=tiny_vgg()).run() == 0
    assert Trainer(config(tmp_path, "there", steps=2), vgg=tiny_vgg()).run() == 0

    done = export(tmp_path / "there", tmp_path / "back", chunk_mib=0.25)
    assert len(done["checkpoint"]) > 1 and all(p.stat().st_size <= 0.25 * 2 ** 20 for p in done["checkpoint"])
    assert merge(tmp_path / "back", tmp_path / "model")["checkpoint"] == "checkpoint.pt"
    sent = tmp_path / "there" / "checkpoints" / "step_00000002.pt"
    assert (tmp_path / "model" / "checkpoint.pt").read_bytes() == sent.read_bytes()
    fp32 = MambaST.from_pretrained(tmp_path / "model").state_dict()
    assert all(torch.equal(v, fp32[k]) for k, v in load_checkpoint(sent)["model"].items())

    resumed = config(tmp_path, "here", resume=str(tmp_path / "model" / "checkpoint.pt"))
    assert Trainer(resumed, vgg=tiny_vgg()).run() == 0
    full, here = (load_checkpoint(tmp_path / f"{run}/checkpoints/step_00000004.pt") for run in ("full", "here"))
    for k, v in full["model"].items():
        assert torch.equal(v, here["model"][k]), k
    for a, b in zip(full["optimizer"]["state"].values(), here["optimizer"]["state"].values()):
        assert torch.equal(a["exp_avg"], b["exp_avg"]) and torch.equal(a["exp_avg_sq"], b["exp_avg_sq"])
