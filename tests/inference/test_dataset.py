"""Dataset jobs: planning (pairings, manifests, the output folder as checkpoint) and the Ray Data run, killed
midway and resumed, against the single-process path."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mambast.errors import JobError
from mambast.inference.dataset import ERRORS_FILE, plan_dataset, random_style

REPO = Path(__file__).resolve().parents[2]


def _img(path: Path, h: int = 8, w: int = 8, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def tree(tmp_path):
    """content/{a,b}/c{0,1,2}.jpg (48 x 64) and style/s{0,1}.png."""
    for i, sub in enumerate("ab"):
        for j in range(3):
            _img(tmp_path / "content" / sub / f"c{j}.jpg", 48, 64, 10 * i + j)
    for k in range(2):
        _img(tmp_path / "style" / f"s{k}.png", 40, 40, 100 + k)
    return tmp_path / "content", tmp_path / "style"


def _rel(paths, root):
    return sorted(os.path.relpath(p, root) for p in paths)


def test_all_pairing_mirrors_the_content_tree(tree, tmp_path):
    plan = plan_dataset(tree[0], tmp_path / "out", tree[1])
    assert len(plan) == 12 and plan.present == 0 and not plan.refused
    assert _rel(plan.outputs, tmp_path / "out")[:2] == ["a/c0_stylized_s0.png", "a/c0_stylized_s1.png"]
    assert all(os.path.isabs(p) for p in plan.contents + plan.styles + plan.outputs)


def test_random_pairing_is_one_style_per_content_fixed_by_the_seed(tree, tmp_path):
    plan = plan_dataset(tree[0], tmp_path / "out", tree[1], pairing="random", seed=3, format="jpg")
    assert _rel(plan.outputs, tmp_path / "out") == [f"{d}/c{j}.jpg" for d in "ab" for j in range(3)]
    again = plan_dataset(tree[0], tmp_path / "out", tree[1], pairing="random", seed=3)
    assert again.styles == plan.styles
    _img(tree[0] / "a" / "new.jpg")   # another content changes no other content's style
    grown = plan_dataset(tree[0], tmp_path / "out", tree[1], pairing="random", seed=3)
    assert [s for c, s in zip(grown.contents, grown.styles) if "new" not in c] == plan.styles
    picks = [random_style(f"x/{i}.jpg", 5, 0) for i in range(100)]
    assert set(picks) == set(range(5)) and picks != [random_style(f"x/{i}.jpg", 5, 1) for i in range(100)]


def test_present_outputs_are_kept_and_a_killed_writes_temp_files_removed(tree, tmp_path):
    out = tmp_path / "out"
    _img(out / "a" / "c0_stylized_s0.png")
    leftover = out / "a" / ".c0_stylized_s1.k2j_x9q1.png"    # as atomic_write names its temp files
    leftover.write_bytes(b"half")
    other = out / "a" / ".keep"
    other.write_bytes(b"not ours")
    notes = out / "a" / ".c0_stylized_s1.notes.png"            # a user's hidden file named like an output
    notes.write_bytes(b"not ours either")
    plan = plan_dataset(tree[0], out, tree[1])
    assert plan.present == 1 and len(plan) == 11 and not leftover.exists() and other.exists() and notes.exists()
    assert len(plan_dataset(tree[0], out, tree[1], overwrite=True)) == 12


def test_manifests_pair_their_rows(tree, tmp_path):
    rows = [("content/a/c0.jpg", "style/s1.png", ""), ("content/b/c2.jpg", "style/s0.png", "x/y.jpg")]
    (tmp_path / "m.csv").write_text("content,style,output\n" + "\n".join(",".join(r) for r in rows) + "\n")
    plan = plan_dataset(tmp_path / "m.csv", tmp_path / "out")
    assert _rel(plan.outputs, tmp_path / "out") == ["content/a/c0_stylized_s1.png", "x/y.jpg"]
    assert plan.styles[0] == str(tree[1] / "s1.png")
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa
    pq.write_table(pa.table({"content": [r[0] for r in rows], "style": [r[1] for r in rows]}), tmp_path / "m.parquet")
    assert len(plan_dataset(tmp_path / "m.parquet", tmp_path / "out2")) == 2


@pytest.mark.parametrize("csv, message", [
    ("content,output\na.jpg,b.png\n", "needs columns content and style"),
    ("content,style,output\na.jpg,s.png,../b.png\n", "relative path inside the output folder"),
    ("content,style,output\na.jpg,s.png,b.txt\n", "image suffix"),
    ("content,style\n/elsewhere/a.jpg,s.png\n", "outside the manifest's folder"),
])
def test_bad_manifests_are_refused_in_one_line(tmp_path, csv, message):
    (tmp_path / "m.csv").write_text(csv)
    with pytest.raises(JobError, match=message):
        plan_dataset(tmp_path / "m.csv", tmp_path / "out")


def test_refusals_before_any_work(tree, tmp_path):
    with pytest.raises(JobError, match="inside the content folder"):
        plan_dataset(tree[0], tree[0] / "a" / "out", tree[1])
    with pytest.raises(JobError, match="needs a style"):
        plan_dataset(tree[0], tmp_path / "out")
    _img(tree[0] / "a" / "c0.png")   # c0.jpg and c0.png: one output name
    plan = plan_dataset(tree[0], tmp_path / "out", tree[1])
    assert plan.failed == 4 and "would all be written there" in plan.refused[0][0] and len(plan) == 10
    from mambast.inference import ray_engine
    for kwargs, message in [({"actors": 0}, "--actors must be at least 1"), ({"readers": 0}, "--readers must be"),
                            ({"gpus_per_actor": 1.5}, "fraction of one GPU"), ({"cpus_per_actor": 0}, "above 0")]:
        with pytest.raises(JobError, match=message):   # before Ray is imported or the output folder made
            ray_engine.stylize_dataset(plan_dataset(tree[0], tmp_path / "never", tree[1]), **kwargs)
        assert not (tmp_path / "never").exists()


def test_an_actor_records_failures_and_retries_a_failed_batch_pair_by_pair(tree, tmp_path, tiny_model):
    from mambast.inference.ray_engine import StylizeActor
    tiny_model.save_pretrained(tmp_path / "model")
    (tree[0] / "a" / "bad.jpg").write_bytes(b"not an image")
    plan = plan_dataset(tree[0], tmp_path / "out", tree[1])
    actor = StylizeActor(str(tmp_path / "model"), {"size": 32, "device": "cpu", "seed": 0}, readers=2, threads=1)
    batch = {k: np.array(getattr(plan, k + "s"), dtype=object) for k in ("content", "style", "output")}
    run = actor.stylizer.run

    def fails_on_batches(jobs):   # a batch-wide failure (out of memory, say) but every pair alone works
        jobs = list(jobs)
        if len(jobs) > 1:
            raise RuntimeError("out of memory")
        return run(jobs)
    actor.stylizer.run = fails_on_batches
    blocks = list(actor(batch))
    assert [len(b["output"]) for b in blocks] == [1] * 14   # batch size 1 on the CPU: each pair as it is written
    result = {k: [v for b in blocks for v in b[k]] for k in blocks[0]}
    failed = [o for o, e in zip(result["output"], result["error"]) if e]
    assert sorted(Path(o).name for o in failed) == ["bad_stylized_s0.png", "bad_stylized_s1.png"]
    assert all("not a recognised image" in e for e in result["error"] if e)
    assert all(Path(o).exists() for o in result["output"] if o not in failed)


def test_a_failed_batch_redoes_outputs_that_existed_before_with_overwrite(tree, tmp_path, tiny_model):
    from mambast.inference.ray_engine import StylizeActor
    tiny_model.save_pretrained(tmp_path / "model")
    old = tmp_path / "out" / "a" / "c0_stylized_s0.png"
    _img(old)
    os.utime(old, (1e9, 1e9))                                  # written long ago
    plan = plan_dataset(tree[0], tmp_path / "out", tree[1], overwrite=True)
    actor = StylizeActor(str(tmp_path / "model"), {"size": 32, "device": "cpu", "seed": 0}, readers=2, threads=1)
    run = actor.stylizer.run
    actor.stylizer.run = lambda jobs: run(jobs) if len(list(jobs)) == 1 else (_ for _ in ()).throw(
        RuntimeError("out of memory"))
    batch = {k: np.array(getattr(plan, k + "s"), dtype=object) for k in ("content", "style", "output")}
    blocks = list(actor(batch))
    assert sum(len(b["output"]) for b in blocks) == len(plan)
    assert old.stat().st_mtime > 1e9 + 1, "an output from before this call is not done: it must be redone"


class _Cluster:
    """What `_pool` asks of the ray module: the cluster's resources and its nodes'."""

    def __init__(self, *nodes):
        self._nodes = [{"Alive": True, "Resources": r} for r in nodes]

    def cluster_resources(self):
        return {k: sum(n["Resources"].get(k, 0) for n in self._nodes) for k in ("CPU", "GPU")}

    def nodes(self):
        return self._nodes


def test_pools_default_to_one_actor_per_gpu_or_cpu_actors_filling_the_nodes():
    from mambast.inference import StylizeConfig
    from mambast.inference.ray_engine import _pool
    gpu_nodes = _Cluster({"CPU": 16, "GPU": 4}, {"CPU": 16, "GPU": 4})
    auto, cpu = StylizeConfig(), StylizeConfig(device="cpu")
    assert vars(_pool(gpu_nodes, auto, None, None, None)) == {"actors": 8, "gpus": 1.0, "cpus": 1.0}
    assert vars(_pool(gpu_nodes, auto, None, 0.5, None)) == {"actors": 16, "gpus": 0.5, "cpus": 1.0}
    assert vars(_pool(gpu_nodes, cpu, None, None, None)) == {"actors": 8, "gpus": 0.0, "cpus": 4.0}
    assert vars(_pool(_Cluster({"CPU": 2}), auto, None, None, None)) == {"actors": 1, "gpus": 0.0, "cpus": 2.0}
    for config, actors, gpus, cpus, message in [
            (auto, 9, None, None, "need 9 GPUs"), (auto, None, None, 32, "no node"),
            (StylizeConfig(device="cuda"), None, 0, None, "no GPU"), (cpu, None, 1, None, "one or the other"),
            (StylizeConfig(device="cuda:1"), None, None, None, "use --device cuda"),
            (StylizeConfig(compile=True), None, 0, None, "for GPU actors")]:
        with pytest.raises(JobError, match=message):
            _pool(gpu_nodes, config, actors, gpus, cpus)


def test_no_ray_on_import_or_help_and_one_line_without_it(tmp_path):
    code = ("import sys, mambast, mambast.cli; mambast.cli.build_parser().parse_args(['stylize-dataset', 'c', "
            "'-o', 'o']); assert 'ray' not in sys.modules, 'ray imported'")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO).returncode == 0
    code = ("import sys; sys.modules['ray'] = None; from mambast.cli import main; "
            f"sys.exit(main(['stylize-dataset', 'c', 's', '-o', {str(tmp_path / 'o')!r}]))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 1 and done.stderr.strip().count("\n") == 0
    assert 'pip install "mambast[ray]"' in done.stderr and not (tmp_path / "o").exists()


def _kill_session(sid: int) -> None:
    """SIGKILL every process of a session until none is left running (Ray's workers make process groups of
    their own, so a process group would miss them)."""
    while True:
        alive = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rpartition(")")[2].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] not in "ZX":   # session id; not a zombie or dead
                alive.append(int(stat.parent.name))
        if not alive:
            return
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)


def _outputs(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))


@pytest.mark.slow
def test_ray_run_killed_midway_resumes_to_every_output_once(tree, tmp_path, tiny_model):
    """The Ray path on CPU: SIGKILL the whole run (driver, local Ray, actors) once outputs appear, rerun; every
    pair is written once, decodable, at its content's size, as the single-process path makes it; the bad
    image is in the errors file; no temp file is left."""
    pytest.importorskip("ray.data")
    from mambast.inference import StylizeConfig, Stylizer, load_model
    from mambast.inference.jobs import Job
    tiny_model.save_pretrained(tmp_path / "model")
    (tree[0] / "b" / "bad.jpg").write_bytes(b"not an image")
    out = tmp_path / "out"
    # size 512 makes each pair take about 0.1 s on one thread: the kill lands with most pairs left to do
    cmd = [sys.executable, "-m", "mambast", "stylize-dataset", str(tree[0]), str(tree[1]), "-o", str(out),
           "--model", str(tmp_path / "model"), "--size", "512", "--seed", "0", "--device", "cpu", "--num-cpus", "2",
           "--actors", "1", "--cpus-per-actor", "1", "--readers", "2", "--quiet"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not _outputs(out) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    _kill_session(proc.pid)   # the driver, the Ray it started and its actors at once, as a crash would
    proc.wait()
    done_before = len([p for p in _outputs(out) if p.suffix == ".png"])
    assert 1 <= done_before < 12, f"{done_before} outputs when killed: not midway"

    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 1, rerun.stderr   # the bad image failed; everything else was done
    summary = rerun.stderr.strip().splitlines()[-2]
    assert summary.startswith(f"{12 - done_before} stylized, {done_before} already present, 2 failed"), summary
    expected = sorted(out / d / f"c{j}_stylized_s{k}.png" for d in "ab" for j in range(3) for k in range(2))
    assert _outputs(out) == sorted(expected + [out / ERRORS_FILE])
    assert not [p for p in out.rglob(".*")], "temp files left"
    errors = [json.loads(line) for line in (out / ERRORS_FILE).read_text().splitlines()]
    assert sorted(Path(e["output"]).name for e in errors) == ["bad_stylized_s0.png", "bad_stylized_s1.png"]
    assert all(e["content"].endswith("bad.jpg") and "\n" not in e["error"] and e["error"] for e in errors)

    config = StylizeConfig(size=512, seed=0, device="cpu").resolved()
    reference = tmp_path / "reference"
    jobs = [Job(tree[0] / d / "c1.jpg", tree[1] / "s1.png", reference / f"{d}.png") for d in "ab"]
    assert all(e is None for _, e in Stylizer.from_config(load_model(tmp_path / "model", config), config).run(jobs))
    for path in expected:
        img = Image.open(path)
        img.load()
        assert img.size == (64, 48)
    for d in "ab":
        ours = np.asarray(Image.open(out / d / "c1_stylized_s1.png")).astype(int)
        assert np.abs(ours - np.asarray(Image.open(reference / f"{d}.png")).astype(int)).max() <= 1
