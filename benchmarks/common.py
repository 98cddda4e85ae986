"""What the benchmarks share: the header record of a run (device, versions, commit, date), wall-clock timing of
repeated calls, and JSON results. Imported by the scripts beside it; measures nothing by itself.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # the scripts run as `python benchmarks/NAME.py` from a source checkout
    sys.path.insert(0, str(REPO))


def git_commit(given: str | None = None) -> tuple[str, bool | None]:
    """(commit, has local changes) of the checkout; `given` wins; ("unknown", None) without git."""
    if given:
        return given, None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown", None
    return (commit, bool(dirty)) if commit else ("unknown", None)


def cpu_name() -> str:
    """The CPU's model name and widest vector extension (CPU timings differ 2-4x between machines)."""
    name, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not name:
                name = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    vector = next((f.upper() for f in ("avx512f", "avx2") if f in flags), "")
    name = name or platform.processor() or platform.machine()
    return f"{name}, {vector.replace('AVX512F', 'AVX-512')}" if vector else name


def header(device: str | torch.device = "cpu", commit: str | None = None, **extra) -> dict:
    """The record every result file starts with: where, with what and from which commit it was measured."""
    device = torch.device(device)
    cuda = device.type == "cuda"
    try:
        import triton
        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    sha, dirty = git_commit(commit)
    return {
        "gpu": torch.cuda.get_device_name(device) if cuda else None,
        "gpu_mem_bytes": torch.cuda.get_device_properties(device).total_memory if cuda else None,
        "device": str(device), "cpu": cpu_name(), "cpu_count": os.cpu_count(),
        "torch": torch.__version__, "triton": triton_version, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "python": platform.python_version(), "threads": torch.get_num_threads(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": sha, "git_dirty": dirty, **extra,
    }


def gpu_slug(device_name: str) -> str:
    """"NVIDIA H100 80GB HBM3" -> "h100", "NVIDIA H200" -> "h200"; the result files are named by it."""
    m = re.search(r"\b([A-Z]{1,2}\d{2,4}[A-Z]?)\b", device_name)
    return m.group(1).lower() if m else re.sub(r"[^a-z0-9]+", "-", device_name.lower()).strip("-") or "device"


def device_slug(device: str | torch.device) -> str:
    """What result files are named by: gpu_slug of the device's GPU, "cpu" off CUDA (video-h100.json,
    video-cpu.json)."""
    device = torch.device(device)
    return gpu_slug(torch.cuda.get_device_name(device)) if device.type == "cuda" else "cpu"


def time_calls(fn, runs: int, sync=None) -> list[float]:
    """Seconds of each of `runs` calls of `fn`, each bracketed by `sync()` (e.g. torch.cuda.synchronize)."""
    sync = sync or (lambda: None)
    times = []
    for _ in range(runs):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return times


def write_json(path: str | os.PathLike, obj) -> Path:
    """Write `obj` as indented JSON (the folder made if needed); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1) + "\n")
    return path
