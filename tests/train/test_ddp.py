"""Two-process data-parallel training on CPU (gloo): ranks end with identical weights and one checkpoint."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_trainer import config, tiny_vgg  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, tmp: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from mambast.train.trainer import Trainer
    trainer = Trainer(config(Path(tmp), "ddp", steps=4, ckpt_every=2), vgg=tiny_vgg())  # last step = a checkpoint step
    code = trainer.run()
    torch.save({"code": code, "model": trainer.model.state_dict(), "seen": trainer.content.seen},
               Path(tmp) / f"rank{rank}.pt")


def test_two_ranks_hold_identical_weights(tmp_path):
    config(tmp_path, "ddp")  # writes the images once, before the ranks start
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["code"] == r1["code"] == 0
    assert r0["seen"] == r1["seen"] == 4 * 2 * 2          # steps x batch x ranks, counted globally
    for k, v in r0["model"].items():
        assert torch.equal(v, r1["model"][k]), k
    from mambast.train.checkpoint import list_checkpoints, load_checkpoint
    ckpts = list_checkpoints(tmp_path / "ddp" / "checkpoints")
    assert [p.name for p in ckpts] == ["step_00000002.pt", "step_00000004.pt"]
    ckpt = load_checkpoint(ckpts[-1])
    assert ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2
    assert not torch.equal(ckpt["rng"][0]["torch"], ckpt["rng"][1]["torch"])   # ranks draw different dropout
    for k, v in r0["model"].items():
        assert torch.equal(v, ckpt["model"][k]), k
