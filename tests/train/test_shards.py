"""bf16 weight shards below a size limit, the device export script and the merge script back to fp32."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mambast.config import MambaSTConfig
from mambast.model import MambaST
from mambast.train.shards import read_shards, write_shards

REPO = Path(__file__).resolve().parents[2]
TINY = dict(dim=32, depth_encoder=1, depth_decoder=1, d_state=4, decoder_channels=[16, 8, 8])


def test_shards_respect_the_size_limit_and_round_trip(tmp_path):
    g = torch.Generator().manual_seed(0)
    state = {f"t{i}": torch.randn(100, 50, generator=g) for i in range(10)}
    state["steps"] = torch.arange(7)
    paths = write_shards(state, tmp_path, max_bytes=40_000 + 65536, info={"step": 5})
    assert len(paths) > 1
    assert all(p.stat().st_size <= 40_000 + 65536 for p in paths)
    back, manifest = read_shards(tmp_path)
    assert manifest["step"] == 5 and sorted(back) == sorted(state)
    assert torch.equal(back["steps"], state["steps"])
    for k in state:
        if k != "steps":
            assert back[k].dtype == torch.float32
            torch.testing.assert_close(back[k], state[k].bfloat16().float())


def test_a_tensor_larger_than_a_shard_is_refused(tmp_path):
    with pytest.raises(ValueError, match="does not fit"):
        write_shards({"big": torch.zeros(100_000)}, tmp_path, max_bytes=100_000)


def test_export_and_merge_scripts_rebuild_the_model(tmp_path):
    from mambast.train.checkpoint import rng_state, save_checkpoint
    torch.manual_seed(0)
    model = MambaST(MambaSTConfig(**TINY))
    save_checkpoint({"step": 7, "model": model.state_dict(), "model_config": model.config.to_dict(),
                     "optimizer": torch.optim.Adam(model.parameters()).state_dict(), "rng": [rng_state()],
                     "data": {"seen": {"content": 14, "style": 14}}, "world_size": 1,
                     "train_config": {"lr": 1e-4}}, tmp_path / "run" / "checkpoints" / "step_00000007.pt")
    run = [sys.executable, str(REPO / "scripts" / "device_export.py"), str(tmp_path / "run"), str(tmp_path / "back")]
    subprocess.run(run, check=True, cwd=REPO, capture_output=True)
    merge = [sys.executable, str(REPO / "scripts" / "merge_shards.py"), str(tmp_path / "back"),
             "--out", str(tmp_path / "model")]
    subprocess.run(merge, check=True, cwd=REPO, capture_output=True)
    rebuilt = MambaST.from_pretrained(tmp_path / "model")
    assert rebuilt.config == model.config
    for k, v in model.state_dict().items():
        torch.testing.assert_close(rebuilt.state_dict()[k], v.bfloat16().float(), msg=k)
