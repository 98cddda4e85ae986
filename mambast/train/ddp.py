"""Multi-process training helpers: rank discovery from torchrun's environment and the few collectives used.

With one process every helper is a no-op, so the trainer has a single code path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def from_env() -> DistInfo:
    """RANK / WORLD_SIZE / LOCAL_RANK as torchrun sets them (a single process when absent)."""
    return DistInfo(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                    int(os.environ.get("LOCAL_RANK", 0)))


def init(info: DistInfo, device: torch.device) -> bool:
    """Join the process group (NCCL on CUDA, gloo on CPU); returns True if this call created it."""
    if not info.enabled or dist.is_initialized():
        return False
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo",
                            rank=info.rank, world_size=info.world_size)
    return True


def any_true(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True on every rank if it is True on any rank (so all ranks stop at the same step)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def mean_over_ranks(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if not info.enabled:
        return t
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / info.world_size


def sum_over_ranks(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if not info.enabled:
        return t
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def gather(obj, info: DistInfo) -> list:
    """Every rank's `obj`, in rank order (one-element list without a process group)."""
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown(created: bool, finished: bool = False) -> None:
    """Leave the process group this process created. finished: every rank ran to the end, so all meet at a
    barrier first (destroying the group while another rank still talks to it can abort that rank at exit,
    "terminate called without an active exception"); after an error another rank may be gone, so no barrier."""
    if created and dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()
