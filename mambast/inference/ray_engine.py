"""Run a `DatasetPlan` on Ray Data: a pool of actors, one model each (loaded once), each batch of pairs through
`Stylizer.run`, the same fast path as `mambast stylize`; the driver reports progress and records failures.

With shards, the driver cuts the plan into shards (`DatasetPlan.shard_bounds`) and each row of the Ray dataset is
one shard, which one actor call stylizes and writes whole: shard numbers and contents are fixed before any actor
runs, so a task Ray retries (its actor lost) rewrites the same shard instead of adding a second copy of its
pairs, and no two actors ever write into one file.

Ray is imported only here, on first use (the `ray` extra); on a cluster every node needs mambast and sees the
inputs and the output folder at the same paths (a shared file system). It must not plan: `dataset` does.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..errors import JobError, one_line, printable
from .config import StylizeConfig, default_batch_size
from .dataset import DatasetPlan

RAY_MISSING = 'stylize-dataset needs Ray Data: pip install "mambast[ray]" (".[ray]" in a source checkout)'
ROWS_PER_BLOCK = 1024        # rows of one block of the input dataset
ROWS_PER_CALL = 32           # x the batch size: pairs per actor call (decoding, writing and batching overlap within one)


def import_ray():
    """The ray module with Ray Data, or a JobError telling how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise JobError(RAY_MISSING) from None
    return ray


@dataclass
class DatasetSummary:
    """What a run did: pairs stylized, outputs already present, failures (read, decode or write errors and
    refused pairs); seconds from the start (Ray starting, models loading) to the last result, and to the first;
    the pairs done (stylized or failed) after the first result came; shards written (with shards)."""
    stylized: int
    present: int
    failed: int
    seconds: float
    first_result_seconds: float
    pairs_after_first: int
    actors: int
    gpus_per_actor: float
    cpus_per_actor: float
    shards: int = 0

    @property
    def images_per_s(self) -> float:
        """Stylized images per second, start-up included."""
        return self.stylized / self.seconds if self.seconds > 0 else 0.0

    @property
    def running_images_per_s(self) -> float | None:
        """Pairs per second once results come (the start-up left out); None when the rest came within a second
        of the first result (too short to time)."""
        span = self.seconds - self.first_result_seconds
        return self.pairs_after_first / span if self.pairs_after_first and span >= 1.0 else None


class StylizeActor:
    """One Ray actor: loads the model once, then stylizes each batch of rows (content, style, output) through
    one `Stylizer`, whose caches live as long as the actor. Yields the rows as they are written, `batch_size`
    at a time (progress while a long call runs), with an `error` column ("" when written); an image that fails
    is recorded there and never stops the batch. With `shards` ({"kind", "format", "root"}) each row is one
    shard (its name, and lists of contents, styles and relative outputs): its images are encoded in memory and
    written into the shard as they come, and its rows are yielded once the shard is renamed into place (a
    `shard` column names it for the pairs in it)."""

    def __init__(self, model: str, config: dict, readers: int | None, threads: int, shards: dict | None = None):
        import torch

        from ..runtime import keep_freed_memory
        from .api import load_model
        from .stylizer import Stylizer
        keep_freed_memory()
        config = StylizeConfig(**config).resolved()   # the device here: cuda if Ray gave this actor a GPU
        if config.device == "cpu":
            torch.set_num_threads(threads)   # the CPUs Ray reserved for this actor, not the node's
        self.stylizer = Stylizer.from_config(load_model(model, config), config, workers=readers)
        self.every = config.batch_size
        self.shards = shards

    def __call__(self, batch: dict):
        from .jobs import Job
        if self.shards:
            for name, contents, styles, outputs in zip(batch["shard"], batch["content"], batch["style"],
                                                       batch["output"]):
                yield _columns(*self._shard(str(name), contents, styles, outputs))
            return
        jobs = [Job(c, s, o) for c, s, o in zip(batch["content"], batch["style"], batch["output"])]
        done: list = []
        for row in self._run(jobs):
            done.append(row)
            if len(done) == self.every:
                yield _columns(done)
                done = []
        if done:
            yield _columns(done)

    def _shard(self, name: str, contents, styles, outputs) -> tuple[list, str]:
        """Stylize one shard's pairs into the shard `name`: ([(job, "" or its error)], name, or "" if no shard was
        written). A shard that cannot be written fails all its pairs (a rerun does them again)."""
        from ..io import encode_image
        from .jobs import Job
        from .shards import Sample, sample_key, write_shard
        kind, fmt = self.shards["kind"], self.shards["format"]
        encoded: dict = {}

        def encode(image, job):   # in the Stylizer's writing threads
            encoded[job.output] = (encode_image(image, fmt), image.size)
        jobs = [Job(c, s, o) for c, s, o in zip(contents, styles, outputs)]   # outputs: names in the shard only
        results: dict = {}

        def samples():
            for job, error in self._run(jobs, write=encode):
                data, (width, height) = encoded.pop(job.output, (b"", (0, 0)))
                results[job] = error
                if not error:
                    output = str(job.output)
                    yield Sample(sample_key(output), str(job.content), str(job.style), output, data, width, height)
        try:
            written = write_shard(os.path.join(self.shards["root"], name), kind, fmt, samples())
        except Exception as e:   # noqa: BLE001  (nothing of the shard is left: its pairs fail, the job goes on)
            why = e.strerror if isinstance(e, OSError) and e.strerror else f"{type(e).__name__}: {one_line(e)}"
            error = f"{name}: cannot write the shard ({why})"
            return [(job, results.get(job) or error) for job in jobs], ""
        return [(job, results[job]) for job in jobs], name if written else ""

    def _run(self, jobs, write=None):
        """(job, "" or its one-line error) for each job; an error of the whole batch (out of memory, say)
        retries the jobs not done one at a time, so that only the pairs that fail alone are recorded.
        write: the Stylizer's (an output then is never a file, so none is taken as done before the failure)."""
        done = 0
        start = time.time()
        try:
            for job, error in self.stylizer.run(jobs, write=write):
                done += 1
                yield job, "" if error is None else one_line(error)
        except Exception:   # noqa: BLE001  (not one image's fault: retried alone below)
            self._free()
            for job in jobs[done:]:
                if write is None and len(jobs) > 1 and _written_since(job.output, start):   # by this call, before
                    yield job, ""                                                          # the batch failed
                    continue
                try:
                    yield from ((job, "" if e is None else one_line(e))
                                for _, e in self.stylizer.run([job], write=write))
                except Exception as e:   # noqa: BLE001
                    self._free()
                    yield job, f"{type(e).__name__}: {one_line(e)}"

    def _free(self) -> None:
        import torch
        self.stylizer.clear_caches()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _written_since(path: Path, start: float) -> bool:
    """Whether `path` exists and was written at `start` or later (an output that existed before, as with
    --overwrite, does not count as done)."""
    try:
        return os.stat(path).st_mtime >= start - 1.0   # 1 s: file systems with coarse time stamps
    except OSError:
        return False


def _columns(rows: list, shard: str = "") -> dict:
    """[(job, error)] -> the columns of a result block; shard: the shard the pairs without an error are in."""
    import numpy as np
    return {"content": np.array([str(j.content) for j, _ in rows], dtype=object),
            "style": np.array([str(j.style) for j, _ in rows], dtype=object),
            "output": np.array([str(j.output) for j, _ in rows], dtype=object),
            "error": np.array([e for _, e in rows], dtype=object),
            "shard": np.array(["" if e else shard for _, e in rows], dtype=object)}


@dataclass
class _Pool:
    actors: int
    gpus: float
    cpus: float


def _check_numbers(actors, gpus_per_actor, cpus_per_actor, readers, num_cpus) -> None:
    """The pool settings that need no cluster to be refused, refused before Ray starts or anything is written."""
    for flag, value, least in (("--actors", actors, 1), ("--readers", readers, 1), ("--num-cpus", num_cpus, 1)):
        if value is not None and value < least:
            raise JobError(f"{flag} must be at least {least}; got {value}")
    if gpus_per_actor is not None and (gpus_per_actor < 0 or gpus_per_actor > 1
                                       and not float(gpus_per_actor).is_integer()):
        raise JobError(f"--gpus-per-actor must be a fraction of one GPU (0.5: two actors share one) or a whole "
                       f"number; got {gpus_per_actor:g}")
    if cpus_per_actor is not None and cpus_per_actor <= 0:
        raise JobError(f"--cpus-per-actor must be above 0; got {cpus_per_actor}")


def _pool(ray, config: StylizeConfig, actors, gpus_per_actor, cpus_per_actor) -> _Pool:
    """Actors and their resources: by default one actor per GPU of the cluster (1 CPU each), or, with no GPU
    (or device cpu), actors of up to 4 CPUs filling every node."""
    _check_numbers(actors, gpus_per_actor, cpus_per_actor, None, None)   # what is given; the defaults below fit
    total = ray.cluster_resources()
    gpus = float(total.get("GPU", 0))
    wants_cuda = str(config.device or "").startswith("cuda")
    if gpus_per_actor is None:
        gpus_per_actor = 0.0 if config.device == "cpu" or gpus == 0 else 1.0
    if wants_cuda and gpus_per_actor == 0:
        raise JobError(f"device {config.device}: the Ray cluster has no GPU (--gpus-per-actor 0)")
    if re.fullmatch(r"cuda:[1-9]\d*", str(config.device)):
        raise JobError(f"device {config.device}: Ray gives each actor its GPU (cuda:0 there): use --device cuda")
    if gpus_per_actor == 0 and (config.compile or config.cuda_graphs):
        raise JobError("--compile and --cuda-graphs are for GPU actors; this pool has none")
    if config.device == "cpu" and gpus_per_actor > 0:
        raise JobError("--device cpu with --gpus-per-actor above 0: give one or the other")
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")] or [{"CPU": 1.0}]
    node_cpus = [float(r.get("CPU", 0)) for r in nodes]
    if cpus_per_actor is None:
        cpus_per_actor = 1.0 if gpus_per_actor else min(4.0, max(node_cpus))
    if cpus_per_actor <= 0:   # the default, where the nodes report no CPUs
        raise JobError(f"--cpus-per-actor must be above 0; got {cpus_per_actor}")
    # an actor no node can hold would be waited for for ever
    if not any(float(r.get("CPU", 0)) >= cpus_per_actor and float(r.get("GPU", 0)) >= gpus_per_actor for r in nodes):
        raise JobError(f"no node of the Ray cluster has {cpus_per_actor:g} CPUs and {gpus_per_actor:g} GPUs for an "
                       f"actor (largest: {max(node_cpus):g} CPUs): lower --cpus-per-actor or --gpus-per-actor")
    if actors is None:
        if gpus_per_actor:
            actors = max(1, int(gpus / gpus_per_actor + 1e-9))
        else:
            actors = max(1, sum(int(c // cpus_per_actor) for c in node_cpus))
    if gpus_per_actor and actors * gpus_per_actor > gpus + 1e-9:
        raise JobError(f"{actors} actors x {gpus_per_actor:g} GPU need {actors * gpus_per_actor:g} GPUs; the Ray "
                       f"cluster has {gpus:g}")
    return _Pool(actors, float(gpus_per_actor), float(cpus_per_actor))


def _unreachable(address: str, timeout: float = 5.0) -> str | None:
    """Why nothing answers at a "host:port" or "ray://host:port" address (one line), or None if a TCP connection
    opens within `timeout` seconds or the address has no port to try."""
    import socket
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit():
        return None
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        return one_line(e) or type(e).__name__
    return None


def _start_ray(ray, address: str | None, num_cpus: int | None, quiet: bool = False) -> bool:
    """Connect to the cluster at `address` ("auto": the one running here), to $RAY_ADDRESS (a job submitted
    with `ray job submit`), or start Ray on this machine alone; True if this call started or connected it."""
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or "local"
    local = address == "local"
    why = None if local or address == "auto" else _unreachable(address)
    if why:    # Ray itself would retry a dead address for minutes
        raise JobError(f"--address {address}: no Ray cluster there ({why})")
    try:
        ray.init(address=address, include_dashboard=False if local else None, log_to_driver=False,
                 logging_level=logging.ERROR if quiet else logging.WARNING,
                 **({"num_cpus": num_cpus} if local and num_cpus else {}))
    except ConnectionError as e:
        raise JobError(f"--address {address}: no Ray cluster there ({one_line(e)})") from None
    return True


def stylize_dataset(plan: DatasetPlan, model="default", config: StylizeConfig | None = None, *,
                    address: str | None = None, actors: int | None = None, gpus_per_actor: float | None = None,
                    cpus_per_actor: float | None = None, readers: int | None = None, num_cpus: int | None = None,
                    progress: bool = True) -> DatasetSummary:
    """Stylize a plan's pairs on Ray Data; failures are written to plan.errors_file (JSON lines: content,
    style, output, error), which holds this run's failures only (an earlier run's are retried).

    address: a Ray cluster ("auto": the one running on this machine; "ray://host:10001"); None: $RAY_ADDRESS,
    else Ray starts on this machine (num_cpus: the CPUs it may use; default all) and stops at the end.
    actors: model replicas (default: one per GPU, or CPU actors filling the nodes); gpus_per_actor: 0.5 puts
    two on each GPU; cpus_per_actor: CPUs reserved for each (its torch threads on a CPU actor); readers:
    decoding and writing threads per actor (default `Stylizer`'s). Settings other than these are `config`'s."""
    config = (config or StylizeConfig()).check()
    _check_numbers(actors, gpus_per_actor, cpus_per_actor, readers, num_cpus)
    errors_file = plan.errors_file
    t0 = time.perf_counter()
    _check_writable(plan.root)
    _start_errors(errors_file, plan.refused)
    if not len(plan):
        return DatasetSummary(0, plan.present, plan.failed, 0.0, 0.0, 0, 0, 0.0, 0.0)
    ray = import_ray()
    started = _start_ray(ray, address, num_cpus, quiet=not progress)
    try:
        pool = _pool(ray, config, actors, gpus_per_actor, cpus_per_actor)
        _quiet_ray_data(ray)
        batch = config.batch_size or default_batch_size("cuda" if pool.gpus else "cpu")
        # long calls (the Stylizer's pipeline drains at the end of each), yet at least two per actor; with
        # shards a row is a shard, and a call writes one
        rows_per_call = 1 if plan.shards else max(1, min(ROWS_PER_CALL * batch,
                                                         math.ceil(len(plan) / (2 * pool.actors))))
        shard_settings = dict(kind=plan.shards, format=plan.format, root=str(plan.root)) if plan.shards else None
        ds = (_shard_dataset(ray, plan) if plan.shards else _dataset(ray, plan, pool.actors)).map_batches(
            StylizeActor, batch_size=rows_per_call, batch_format="numpy",
            fn_constructor_kwargs=dict(model=_absolute(model), config=dataclasses.asdict(config), readers=readers,
                                       threads=max(1, int(pool.cpus)), shards=shard_settings),
            compute=ray.data.ActorPoolStrategy(size=pool.actors), num_gpus=pool.gpus or None, num_cpus=pool.cpus)
        try:
            stylized, failed, first, after_first, seconds, written = _consume(ds, plan, errors_file, progress, t0)
        except Exception as e:   # noqa: BLE001
            if not type(e).__module__.startswith("ray"):
                raise
            raise JobError(f"the Ray job stopped: {_cause(e)} (outputs written so far are kept; on a cluster every "
                           "node needs mambast and the inputs at the same paths; Ray's logs: "
                           "/tmp/ray/session_latest/logs)") from None
    finally:
        if started:
            ray.shutdown()
    return DatasetSummary(stylized, plan.present, failed + plan.failed, seconds, first, after_first, pool.actors,
                          pool.gpus, pool.cpus, written)


def _absolute(model) -> str:
    """A model as the actors must name it: "default", or an absolute path (an actor's working folder is its own)."""
    return "default" if str(model) == "default" else os.path.abspath(model)


def _cause(e: BaseException) -> str:
    """The innermost "SomeError: message" line of a Ray exception (whose text holds the remote traceback)."""
    lines = [ln.strip() for ln in str(e).splitlines()]
    causes = [ln for ln in lines if re.match(r"^[\w.]*(Error|Exception): \S", ln)]
    return causes[-1] if causes else one_line(e)


def _quiet_ray_data(ray) -> None:
    """Ray Data's own progress bars and start-up lines off: the driver shows one bar over images."""
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    # failures reach the user as one line (`_cause`); Ray's logs keep the full traces
    logging.getLogger("ray.data").setLevel(logging.CRITICAL)


def _dataset(ray, plan: DatasetPlan, actors: int):
    """The plan as a Ray dataset of rows (content, style, output) in blocks of at most ROWS_PER_BLOCK, at least
    4 per actor, in plan order (a content's pairs stay together, so its tokens are encoded once)."""
    import pyarrow as pa
    n = len(plan)
    blocks = min(n, max(4 * actors, math.ceil(n / ROWS_PER_BLOCK)))
    bounds = [n * i // blocks for i in range(blocks + 1)]
    tables = [pa.table({"content": plan.contents[a:b], "style": plan.styles[a:b], "output": plan.outputs[a:b]})
              for a, b in zip(bounds, bounds[1:])]
    return ray.data.from_arrow(tables)


def _shard_dataset(ray, plan: DatasetPlan):
    """The plan as a Ray dataset of one row per shard (`shard_rows`), one block each, so that the shards spread
    over the actors."""
    import pyarrow as pa
    return ray.data.from_arrow([pa.table({k: [v] for k, v in row.items()}) for row in shard_rows(plan)])


def shard_rows(plan: DatasetPlan) -> Iterator[dict]:
    """The row of each shard: its file name, and lists of its contents, styles and outputs relative to the
    output folder."""
    for name, a, b in plan.shard_bounds():
        yield {"shard": name, "content": plan.contents[a:b], "style": plan.styles[a:b],
               "output": [plan.relative(o) for o in plan.outputs[a:b]]}


def _consume(ds, plan: DatasetPlan, errors_file, progress: bool, t0: float):
    """Iterate the results: a progress bar with the rate, failures appended to the errors file as they come.
    Returns (stylized, failed, seconds to the first result, pairs after it, seconds to the last, shards
    written)."""
    from tqdm import tqdm
    stylized = failed = 0
    shards: set = set()
    first, first_pairs = 0.0, 0
    bar = tqdm(total=len(plan), desc="stylize-dataset", unit="img", disable=not progress, file=sys.stderr,
               smoothing=0.1)
    try:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0):
            if not first:
                first, first_pairs = time.perf_counter() - t0, len(batch["output"])
            rows = [{"content": c, "style": s, "output": o, "error": e} for c, s, o, e in
                    zip(batch["content"], batch["style"], batch["output"], batch["error"]) if e]
            _append_errors(errors_file, rows)
            failed += len(rows)
            stylized += len(batch["output"]) - len(rows)
            shards.update(s for s in batch["shard"] if s)
            bar.update(len(batch["output"]))
            for row in rows[:3]:   # a few on screen, all in the file
                tqdm.write(f"mambast: error: {printable(row['error'])}", file=sys.stderr)
    finally:
        bar.close()
    return stylized, failed, first, stylized + failed - first_pairs, time.perf_counter() - t0, len(shards)


def _check_writable(root) -> None:
    """The output folder made, and a file written there, before any work; JobError in one line otherwise."""
    import tempfile
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=root):
            pass
    except OSError as e:
        raise JobError(f"{root}: cannot write outputs there ({e.strerror or e})") from None


def _start_errors(path, refused: list[tuple[str, int]]) -> None:
    """A new errors file for this run (an earlier run's failures are retried, so its file goes), holding the
    pairs refused before the run, if any; otherwise the file appears with the first failure."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    _append_errors(path, [{"error": reason, "pairs": n} for reason, n in refused])


def _append_errors(path, rows: list[dict]) -> None:
    """Append rows as JSON lines, one write each (a killed run leaves whole lines)."""
    if not rows:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        for row in rows:
            os.write(fd, (json.dumps({k: v if isinstance(v, int) else str(v) for k, v in row.items()}) + "\n")
                     .encode())
    finally:
        os.close(fd)
