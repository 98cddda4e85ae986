"""Check that data-parallel ranks end a run with identical weights: runs the trainer's own loop (same model,
DDP wrapping, data and steps as `python -m mambast.train`), then compares every rank's tensors with rank 0's.

Launch with torchrun; takes every trainer flag, plus --json to write the report (rank 0):
  torchrun --standalone --nproc_per_node 2 scripts/ddp_compare.py --content C --style S --out OUT --steps 20 \
      [trainer flags] [--json report.json] [--perturb]
Compared after the last step: parameters, buffers and Adam's moments (exp_avg, exp_avg_sq). Exit code 0 when all
are bitwise equal on every rank, 1 when any differ, 2 when not run under several processes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mambast.train import ddp  # noqa: E402
from mambast.train.cli import add_config_arguments, config_from_args  # noqa: E402
from mambast.train.trainer import Trainer  # noqa: E402


def state_groups(trainer: Trainer) -> dict[str, list[tuple[str, torch.Tensor]]]:
    """Named tensors to compare, by group, in a fixed order (the same on every rank)."""
    model, opt = trainer.model, trainer.opt
    params = list(model.named_parameters())
    buffers = list(model.named_buffers())
    moments = {"exp_avg": [], "exp_avg_sq": []}
    for name, p in params:
        st = opt.state.get(p, {})
        for key in moments:
            if key in st:
                moments[key].append((name, st[key]))
    return {"parameters": params, "buffers": buffers, **moments}


def flatten(named: list[tuple[str, torch.Tensor]], device: torch.device) -> torch.Tensor:
    if not named:
        return torch.zeros(0, device=device)
    return torch.cat([t.detach().float().reshape(-1) for _, t in named]).to(device)   # [total elements]


def compare(trainer: Trainer) -> dict:
    """All-gather each group's flattened tensors; max |rank r - rank 0|, sha256 per rank, worst tensor name."""
    info, device = trainer.dist, trainer.device
    report = {"world_size": info.world_size, "step": trainer.step, "groups": {}}
    for group, named in state_groups(trainer).items():
        flat = flatten(named, device)                                            # [n]
        digest = hashlib.sha256(flat.cpu().numpy().tobytes()).hexdigest()[:16]
        every = [torch.empty_like(flat) for _ in range(info.world_size)]
        dist.all_gather(every, flat)                                             # world_size x [n]
        diffs = [float((f - every[0]).abs().max()) if f.numel() else 0.0 for f in every]
        worst = ""
        if max(diffs) > 0:                                                       # name the first differing tensor
            offset = 0
            for name, t in named:
                n = t.numel()
                if any(not torch.equal(f[offset:offset + n], every[0][offset:offset + n]) for f in every):
                    worst = name
                    break
                offset += n
        report["groups"][group] = {"tensors": len(named), "elements": int(flat.numel()),
                                   "max_abs_diff_vs_rank0": diffs, "sha256_16": ddp.gather(digest, info),
                                   "first_differing": worst}
    report["identical"] = all(max(g["max_abs_diff_vs_rank0"]) == 0.0 and len(set(g["sha256_16"])) == 1
                              for g in report["groups"].values())
    return report


class ComparingTrainer(Trainer):
    """The trainer, unchanged, plus the comparison after its loop (while the process group is still up)."""

    report: dict | None = None

    perturb = False

    def _loop(self) -> None:
        super()._loop()
        if self.perturb and self.dist.rank == self.dist.world_size - 1:
            with torch.no_grad():
                next(self.model.parameters()).view(-1)[0] += 1e-3
        self.report = compare(self)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_config_arguments(parser)
    parser.add_argument("--json", default="", help="write the report here (rank 0)")
    parser.add_argument("--perturb", action="store_true",
                        help="self-test: the last rank nudges one weight before comparing (must report a difference)")
    args = parser.parse_args(argv)
    info = ddp.from_env()
    if not info.enabled:
        print("ddp_compare: run under torchrun with --nproc_per_node >= 2", file=sys.stderr)
        return 2
    trainer = ComparingTrainer(config_from_args(args))
    trainer.perturb = args.perturb
    code = trainer.run()
    report = trainer.report
    if report is None:
        print(f"ddp_compare: rank {info.rank}: training ended without a comparison (exit {code})", file=sys.stderr)
        return 1
    if info.is_main:
        report["trainer_exit_code"] = code
        for group, g in report["groups"].items():
            print(f"[ddp_compare] {group:10s} {g['tensors']:4d} tensors {g['elements']:>10d} elements  "
                  f"max|rank-rank0| {max(g['max_abs_diff_vs_rank0']):.3g}  sha256 {' '.join(g['sha256_16'])}"
                  + (f"  first differing: {g['first_differing']}" if g["first_differing"] else ""), flush=True)
        print(f"[ddp_compare] step {report['step']}: ranks identical: {report['identical']}", flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["identical"] and code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
