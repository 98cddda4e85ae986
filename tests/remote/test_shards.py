"""bf16 weight shards below a size limit (scripts/remote/shards.py), and back to fp32."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts" / "remote"))  # the helpers are scripts
from shards import read_shards, write_shards  # noqa: E402


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
