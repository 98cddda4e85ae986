"""The loss curves of one or more training runs from the trainer's `log.csv` files, in the order given (a run
continued with --init or --resume follows the one it continued), as one picture, and optionally the rows of all
of them as one CSV with a `run` column (the whole log of a model trained over several runs).

  python scripts/plot_training_log.py run1/log.csv run2/log.csv --out docs/training-loss.png [--csv whole.csv]
      [--window 100] [--first-run N]
  python scripts/plot_training_log.py whole.csv run3/log.csv --out docs/training-loss.png --csv whole.csv

A CSV written by --csv counts as the runs it holds, so the whole log grows by one run at a time.

Each curve is the mean over the last `--window` steps (logged rows in that span) up to each row; a dashed line
marks where each later run starts. Needs matplotlib.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mambast.train.trainer import LOG_TERMS as TERMS  # noqa: E402  (the loss columns the trainer logs)


def read_logs(paths: list[Path]) -> list[list[dict]]:
    """The runs of the given logs, in order: a trainer's log.csv is one run; a CSV this script wrote (`run`
    column) is split back into its runs."""
    runs: list[list[dict]] = []
    for path in paths:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            missing = [t for t in ("step", *TERMS) if t not in (reader.fieldnames or ())]
            if missing:
                raise SystemExit(f"{path}: not a trainer log (no {', '.join(missing)} column)")
            rows = list(reader)
        if not rows:
            raise SystemExit(f"{path}: no rows")
        if "run" not in rows[0]:
            runs.append(rows)
            continue
        for r in rows:
            if not runs or r["run"] != runs[-1][0].get("run"):
                runs.append([])
            runs[-1].append(r)
    return runs


def first_run_number(path: Path) -> int:
    """The run number of a log's first row: its `run` column where it has one (a CSV written by --csv), else 1."""
    return int(read_logs([path])[0][0].get("run", 1))


def read_runs(paths: list[Path]) -> list[list[dict]]:
    """Rows of each run (`read_logs`). Where a run starts at or before a step the run before it logged (resumed
    from an older checkpoint), the earlier run's rows from that step on are dropped: the later run replaced them."""
    runs: list[list[dict]] = []
    for rows in read_logs(paths):
        first = int(rows[0]["step"])
        for run in runs:
            run[:] = [r for r in run if int(r["step"]) < first]
        runs = [run for run in runs if run] + [[{k: v for k, v in r.items() if k != "run"} for r in rows]]
    return runs


def smoothed(steps: list[int], values: list[float], window: int) -> list[float]:
    """Mean of the values logged within the last `window` steps up to each one."""
    out, lo, total = [], 0, 0.0
    for i, (s, v) in enumerate(zip(steps, values)):
        total += v
        while steps[lo] <= s - window:
            total -= values[lo]
            lo += 1
        out.append(total / (i - lo + 1))
    return out


def write_csv(runs: list[list[dict]], path: Path, first_run: int = 1) -> None:
    """All rows in one CSV: one column set for all (older logs may lack some) and the run each row came from."""
    fields = ["run"] + list(dict.fromkeys(k for run in runs for r in run for k in r))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, restval="")
        w.writeheader()
        w.writerows({"run": first_run + i, **r} for i, run in enumerate(runs) for r in run)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("logs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True, help="picture (png)")
    ap.add_argument("--csv", type=Path, help="also write all rows as one CSV")
    ap.add_argument("--window", type=int, default=100, help="steps averaged per point (default 100)")
    ap.add_argument("--first-run", type=int, help="number of the first run in --csv (default: the first log's own "
                    "number where it is a CSV with a run column, else 1)")
    args = ap.parse_args(argv)
    if args.window < 1:
        ap.error("--window must be at least 1")
    runs = read_runs(args.logs)
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for run in runs for r in run]
    steps = [int(r["step"]) for r in rows]
    fig, axes = plt.subplots(1, len(TERMS), figsize=(3.2 * len(TERMS), 2.8), constrained_layout=True)
    for ax, term in zip(axes, TERMS):
        ax.plot(steps, smoothed(steps, [float(r[term]) for r in rows], args.window), lw=1)
        for run in runs[1:]:
            ax.axvline(int(run[0]["step"]), color="grey", ls="--", lw=0.8)
        ax.set_title(term, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(f"training losses (mean over {args.window} steps; dashed: a run continues)", fontsize=10)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out} ({len(rows)} rows, steps {steps[0]}-{steps[-1]}, {len(runs)} run(s))")
    if args.csv:
        write_csv(runs, args.csv, args.first_run if args.first_run is not None else first_run_number(args.logs[0]))
        print(f"wrote {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
