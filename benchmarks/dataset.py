"""Images/s of `mambast stylize-dataset` (Ray Data actors) beside `mambast stylize` (one process) on the same images.

Usage: python benchmarks/dataset.py [--contents 256 --styles 8 --size 512] [--actors 1x1,2x0.5] [--publish]
Synthetic JPEG inputs (smooth random colour fields, `folder.make_images`), every content x every style, each
command run end to end as a user runs it (a fresh process: Python, torch, Ray starting, models loading, then
decode, stylize, write PNGs), on a quarter of the contents and on all of them, into fresh output folders,
--repeats times each (the fastest counts: other work on the machine only slows a run down), Ray's workers at
niceness 0 (RAY_worker_niceness; Ray's default is 15), the priority of `mambast stylize`.
Per record: wall seconds and images/s of each run (start-up included), and the steady rate
(all - quarter pairs) / (all - quarter seconds), in which the start-up cancels out.
--actors lists Ray pools as ACTORSxGPUS_PER_ACTOR ("2x0.5": two actors sharing one GPU; "1x0": a CPU actor).
--one-to-one N adds N pairs of distinct contents and styles (a manifest) through the first pool: no token cache
helps there, so its steady rate is the per-image cost of a Stylized-ImageNet-like job (one style per content,
drawn from a large collection).
The bundled model unless --model (--tiny: a tiny random model, a CPU smoke run). --publish writes
benchmarks/results/dataset-<gpu>.json (dataset-cpu.json without CUDA): [{"header": ...}, record, ...].
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from common import REPO, device_slug, header, write_json  # noqa: E402  (benchmarks/common.py)
from folder import make_images  # noqa: E402

from mambast.config import MambaSTConfig  # noqa: E402
from mambast.model import MambaST  # noqa: E402


# Ray runs its workers at niceness 15 unless told; at 0 they run at the priority of `mambast stylize`, so that other
# work on the machine slows both commands alike
RAY_WORKER_NICENESS = 0


def run(cmd: list[str], out: Path, n: int, repeats: int, threads: int | None) -> dict:
    """Run one command to the end `repeats` times, each into a fresh `out`; the fastest run's wall seconds and
    images/s (n pairs), and every run's seconds. threads: the CPU threads of torch and numba (None: theirs)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
           "RAY_worker_niceness": str(RAY_WORKER_NICENESS)}
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), NUMBA_NUM_THREADS=str(threads))
    times = []
    for _ in range(repeats):
        shutil.rmtree(out, ignore_errors=True)
        t = time.perf_counter()
        done = subprocess.run([*cmd, "-o", str(out)], env=env, capture_output=True, text=True)
        times.append(time.perf_counter() - t)
        if done.returncode != 0:
            sys.exit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr[-3000:]}")
    return {"pairs": n, "seconds": min(times), "images_per_s": n / min(times), "all_seconds": times}


def pool_flags(actors: str, gpus: str, threads: int | None) -> list[str]:
    """The flags of a Ray pool; a CPU actor gets `threads` CPUs."""
    cpus = ["--cpus-per-actor", str(threads)] if threads and float(gpus) == 0 else []
    return ["--actors", actors, "--gpus-per-actor", gpus, *cpus]


def one_to_one(folder: Path, n: int, size: int) -> dict:
    """n contents and n other styles paired one to one by manifests (a quarter's and all): each pair encodes
    its own content and style, as when styles are drawn from a large collection (Stylized-ImageNet)."""
    contents = make_images(folder / "content", n, size, 2)
    styles = make_images(folder / "style", n, size, 3)
    parts = {}
    for part, k in (("quarter", max(1, n // 4)), ("all", n)):
        manifest = folder / f"{part}.csv"
        manifest.write_text("content,style\n" + "".join(f"content/{c.name},style/{s.name}\n"
                                                       for c, s in zip(contents[:k], styles[:k])))
        parts[part] = ([str(manifest)], k)
    return parts


def ray_version() -> str | None:
    """Ray's version without importing it here (the commands under test do)."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("ray")
    except PackageNotFoundError:
        return None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    cuda = torch.cuda.is_available()
    ap.add_argument("--contents", type=int, default=256 if cuda else 8)
    ap.add_argument("--styles", type=int, default=8 if cuda else 2)
    ap.add_argument("--size", type=int, default=512, help="side of the synthetic square images (also --size)")
    ap.add_argument("--batch-size", type=int, default=None, help="--batch-size of both commands (default theirs)")
    ap.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--actors", default=None,
                    help="Ray pools, comma-separated ACTORSxGPUS (default 1x1,2x0.5 and, with several GPUs, Nx1; "
                         "on CPU 1x0)")
    ap.add_argument("--one-to-one", type=int, default=1024 if cuda else 32,
                    help="also this many pairs of distinct contents and styles through the first Ray pool (0: not)")
    ap.add_argument("--model", default="default", help="model (default: the bundled one)")
    ap.add_argument("--tiny", action="store_true", help="tiny random model (smoke run)")
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU threads of each command (OMP_NUM_THREADS, NUMBA_NUM_THREADS; --cpus-per-actor of a "
                         "CPU actor); default: all cores")
    ap.add_argument("--repeats", type=int, default=1, help="runs of each command; the fastest counts (default 1)")
    ap.add_argument("--publish", action="store_true", help="write benchmarks/results/dataset-<gpu>.json")
    ap.add_argument("--out", default=None, help="or write dataset.json into this folder")
    ap.add_argument("--commit", default=None, help="git commit to record (default: git rev-parse HEAD)")
    args = ap.parse_args(argv)
    gpus = torch.cuda.device_count()
    pools = args.actors or ("1x1,2x0.5" + (f",{gpus}x1" if gpus > 1 else "") if cuda else "1x0")
    tmp = Path(tempfile.mkdtemp(prefix="mambast-dataset-"))
    try:
        model = args.model
        if args.tiny:
            torch.manual_seed(0)
            MambaST(MambaSTConfig(dim=32, depth_encoder=1, depth_decoder=1, d_state=4,
                                  decoder_channels=[16, 8, 8])).save_pretrained(tmp / "tiny")
            model = str(tmp / "tiny")
        contents = make_images(tmp / "content", args.contents, args.size, 0)
        make_images(tmp / "style", args.styles, args.size, 1)
        quarter = tmp / "content-quarter"
        quarter.mkdir()
        for p in contents[:max(1, len(contents) // 4)]:
            shutil.copy(p, quarter / p.name)
        common = ["--model", model, "--size", str(args.size), "--seed", "0", "--quiet"]
        common += ["--batch-size", str(args.batch_size)] if args.batch_size else []
        common += ["--dtype", args.dtype] if args.dtype else []
        every = {part: ([str(folder), str(tmp / "style")], args.styles * len(list(folder.iterdir())))
                 for part, folder in (("quarter", quarter), ("all", tmp / "content"))}
        # (name, subcommand and its options, {part: (inputs, pairs)})
        cases = [("stylize (one process), every content x every style", ["stylize"], every)]
        for pool in pools.split(","):
            actors, gpu = pool.split("x")
            cases.append((f"stylize-dataset {actors} actors x {gpu} GPU, every content x every style",
                          ["stylize-dataset", *pool_flags(actors, gpu, args.threads)], every))
        if args.one_to_one:
            actors, gpu = pools.split(",")[0].split("x")
            cases.append((f"stylize-dataset {actors} actors x {gpu} GPU, one style per content (manifest)",
                          ["stylize-dataset", *pool_flags(actors, gpu, args.threads)],
                          one_to_one(tmp / "one-to-one", args.one_to_one, args.size)))
        records = []
        for name, command, parts in cases:
            runs = {part: run([sys.executable, "-m", "mambast", command[0], *inputs, *common, *command[1:]],
                              tmp / "out" / f"{len(records)}-{part}", n, args.repeats, args.threads)
                    for part, (inputs, n) in parts.items()}
            q, a = runs["quarter"], runs["all"]
            steady = (a["pairs"] - q["pairs"]) / (a["seconds"] - q["seconds"]) if a["seconds"] > q["seconds"] else None
            records.append({"engine": name, "runs": runs, "steady_images_per_s": steady})
            print(f"{name}\n    all: {a['images_per_s']:7.2f} images/s ({a['seconds']:.1f} s for {a['pairs']}); "
                  f"quarter: {q['seconds']:.1f} s for {q['pairs']}; steady {steady or float('nan'):.2f} images/s",
                  flush=True)
        head = header("cuda" if cuda else "cpu", args.commit, size=args.size, contents=args.contents,
                      styles=args.styles, one_to_one=args.one_to_one, batch_size=args.batch_size, dtype=args.dtype,
                      gpus=gpus, cpu_threads=args.threads, ray_worker_niceness=RAY_WORKER_NICENESS,
                      model="tiny random" if args.tiny else args.model, ray=ray_version(),
                      command=" ".join(["python", "benchmarks/dataset.py", *(argv or sys.argv[1:])]))
        result = [{"header": head}, *records]
        if args.publish:
            name = f"dataset-{device_slug('cuda' if cuda else 'cpu')}.json"
            print("wrote", write_json(REPO / "benchmarks" / "results" / name, result))
        if args.out:
            print("wrote", write_json(Path(args.out) / "dataset.json", result))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
