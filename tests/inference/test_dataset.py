"""Dataset jobs: planning (pairings, manifests, the output folder as checkpoint), WebDataset and Parquet shards,
and the Ray Data run, killed midway and resumed, against the single-process path."""

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
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
    rows = [("content/a/c0.jpg", "style/s1.png", ""), ("content/b/c2.jpg", "style/s0.png", "x/y.jpg"),
            ("content/b/c1.jpg", "style/s0.png", "..z.jpg")]   # a name that starts with two dots, not a '..'
    (tmp_path / "m.csv").write_text("content,style,output\n" + "\n".join(",".join(r) for r in rows) + "\n")
    plan = plan_dataset(tmp_path / "m.csv", tmp_path / "out")
    assert _rel(plan.outputs, tmp_path / "out") == ["..z.jpg", "content/a/c0_stylized_s1.png", "x/y.jpg"]
    assert plan.styles[0] == str(tree[1] / "s1.png")
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa
    pq.write_table(pa.table({"content": [r[0] for r in rows], "style": [r[1] for r in rows]}), tmp_path / "m.parquet")
    assert len(plan_dataset(tmp_path / "m.parquet", tmp_path / "out2")) == 3


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


def test_an_address_where_nothing_answers_is_refused_at_once():
    """Ray would retry a dead cluster address for minutes; the job is refused in one line before ray.init."""
    import socket

    from mambast.inference import ray_engine

    class NoInit:
        def is_initialized(self):
            return False

        def init(self, **kwargs):
            raise AssertionError("ray.init called for an address where nothing answers")
    with socket.socket() as probe:                       # a port that was free a moment ago: nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        t0 = time.perf_counter()
        with pytest.raises(JobError, match=f"--address {address}: no Ray cluster there"):
            ray_engine._start_ray(NoInit(), address, None)
        assert time.perf_counter() - t0 < 6
    assert ray_engine._unreachable("auto") is None and ray_engine._unreachable("head-node") is None
    with socket.socket() as server:                      # something listening: left to Ray
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert ray_engine._unreachable(f"127.0.0.1:{server.getsockname()[1]}") is None


def _fails_on_batches(run):
    """A Stylizer.run whose batches fail as a whole (out of memory, say) while every pair alone works."""
    def fails_on_batches(jobs, **options):
        jobs = list(jobs)
        if len(jobs) > 1:
            raise RuntimeError("out of memory")
        return run(jobs, **options)
    return fails_on_batches


def test_an_actor_records_failures_and_retries_a_failed_batch_pair_by_pair(tree, tmp_path, tiny_model):
    from mambast.inference.ray_engine import StylizeActor
    tiny_model.save_pretrained(tmp_path / "model")
    (tree[0] / "a" / "bad.jpg").write_bytes(b"not an image")
    plan = plan_dataset(tree[0], tmp_path / "out", tree[1])
    actor = StylizeActor(str(tmp_path / "model"), {"size": 32, "device": "cpu", "seed": 0}, readers=2, threads=1)
    batch = {k: np.array(getattr(plan, k + "s"), dtype=object) for k in ("content", "style", "output")}
    actor.stylizer.run = _fails_on_batches(actor.stylizer.run)
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
    actor.stylizer.run = lambda jobs, **options: run(jobs, **options) if len(list(jobs)) == 1 else (
        _ for _ in ()).throw(RuntimeError("out of memory"))
    batch = {k: np.array(getattr(plan, k + "s"), dtype=object) for k in ("content", "style", "output")}
    blocks = list(actor(batch))
    assert sum(len(b["output"]) for b in blocks) == len(plan)
    assert old.stat().st_mtime > 1e9 + 1, "an output from before this call is not done: it must be redone"


# ------------------------------------------------------------------------------------------------ shards

def _shard_samples(out: Path, kind: str) -> dict[str, dict]:
    """Every sample of OUT's shards, read with plain tarfile or pyarrow: key -> its fields and image bytes.
    A key in two places, or a tar sample whose files are not adjacent (WebDataset's grouping), fails."""
    samples: dict[str, dict] = {}
    if kind == "webdataset":
        for shard in sorted(out.glob("shard-*.tar")):
            with tarfile.open(shard) as tar:
                members = tar.getmembers()
                assert len(members) % 2 == 0
                for image, meta in zip(members[::2], members[1::2]):
                    key, ext = image.name.rsplit(".", 1)
                    assert "." not in key.rpartition("/")[2] and meta.name == f"{key}.json", (image.name, meta.name)
                    assert key not in samples, f"{key} twice"
                    samples[key] = {**json.loads(tar.extractfile(meta).read()), "data": tar.extractfile(image).read(),
                                    "ext": ext, "shard": shard.name}
    else:
        import pyarrow.parquet as pq
        for shard in sorted(out.glob("shard-*.parquet")):
            for row in pq.read_table(shard).to_pylist():
                assert row["key"] not in samples, f"{row['key']} twice"
                samples[row["key"]] = {**row, "data": row.pop("image"), "shard": shard.name}
    return samples


@pytest.fixture(scope="module")
def actor(tmp_path_factory):
    """One CPU actor of a tiny model for the module's shard tests (as Ray would make it, without Ray)."""
    import torch
    from conftest import randomize, tiny_config

    from mambast.inference.ray_engine import StylizeActor
    from mambast.model import MambaST
    folder = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    randomize(MambaST(tiny_config())).save_pretrained(folder)
    return StylizeActor(str(folder), {"size": 32, "device": "cpu", "seed": 0}, readers=2, threads=1)


def _run_actor(actor, plan, shards_done: int | None = None) -> list[dict]:
    """Run a plan through the actor as the driver sends it: folder rows in one call, or one call per shard row
    (the first `shards_done` shards only, as a run killed after them); the result rows."""
    from mambast.inference.ray_engine import shard_rows
    if plan.shards is None:
        actor.shards = None
        blocks = list(actor({k: np.array(getattr(plan, k + "s"), dtype=object) for k in ("content", "style",
                                                                                          "output")}))
    else:
        actor.shards = {"kind": plan.shards, "format": plan.format, "root": str(plan.root)}
        blocks = []
        for row in list(shard_rows(plan))[:shards_done]:
            batch = {k: np.empty(1, dtype=object) for k in row}
            for k, v in row.items():
                batch[k][0] = np.array(v, dtype=object) if isinstance(v, list) else v
            blocks += actor(batch)
    return [dict(zip(b, values)) for b in blocks for values in zip(*b.values())]


def _write_shards(out: Path, kind: str, outputs: list[str], fmt: str = "png", number: int = 0) -> Path:
    """A finished shard of the given relative outputs (tiny fake images), as an actor writes it."""
    from mambast.inference.shards import Sample, sample_key, shard_name, write_shard
    path = out / shard_name(number, kind)
    write_shard(path, kind, fmt, (Sample(sample_key(o), "c.jpg", "s.png", o, b"img", 1, 1) for o in outputs))
    return path


def test_sample_keys_are_tar_safe_reversible_and_unique():
    from urllib.parse import unquote

    from mambast.inference.shards import sample_key
    names = ["a/c0_stylized_s0.png", "a/x.v2_stylized_s.png", "a/x_v2_stylized_s.png", "a/x%2Ev2_stylized_s.png",
             "n01/n01_1.JPEG", "d.ir/été 1.png", ".hidden.png", "../up.png", "C:/r.png", "\\evil/q.png",
             "a\\..\\..\\b.png", "-rf 50%.png"]
    keys = [sample_key(n) for n in names]
    assert keys[:2] == ["a/c0_stylized_s0", "a/x%2Ev2_stylized_s"] and keys[5] == "d%2Eir/été 1"
    assert len(set(keys)) == len(keys) and not any("." in k or ":" in k or "\\" in k for k in keys)
    # extracted anywhere, a member stays inside the folder: no '..', no root, no drive, no Windows separator
    assert not any(k.startswith("/") or ".." in k.split("/") for k in keys) and keys[8] == "C%3A/r"
    for k in keys:   # WebDataset's rule: a member's key is its name up to the first dot of its last part
        folder, _, name = f"{k}.png".rpartition("/")
        assert folder + "/" * bool(folder) + name.split(".")[0] == k
    assert [unquote(k) for k in keys] == [os.path.splitext(n)[0] for n in names]


@pytest.mark.parametrize("kind, fmt", [("webdataset", "png"), ("parquet", "png"), ("webdataset", "jpg")])
def test_shards_hold_every_pair_once_as_folder_mode_writes_it(tree, tmp_path, actor, kind, fmt):
    """Each pair once, in shards of --shard-size in plan order, with the bytes folder mode writes for it (the same
    encoder and settings); fields name the pair; a bad image is a failure, not a sample."""
    (tree[0] / "b" / "bad.jpg").write_bytes(b"not an image")
    folder = plan_dataset(tree[0], tmp_path / "folder", tree[1], format=fmt)
    _run_actor(actor, folder)
    plan = plan_dataset(tree[0], tmp_path / "out", tree[1], format=fmt, shards=kind, shard_size=5)
    suffix = ".tar" if kind == "webdataset" else ".parquet"
    assert [name for name, _, _ in plan.shard_bounds()] == [f"shard-00000{i}{suffix}" for i in range(3)]
    rows = _run_actor(actor, plan)
    failed = sorted(r["output"] for r in rows if r["error"])
    assert failed == [f"b/bad_stylized_s0.{fmt}", f"b/bad_stylized_s1.{fmt}"]
    samples = _shard_samples(tmp_path / "out", kind)
    in_plan_order = [plan.relative(o) for o in plan.outputs if "bad" not in o]
    assert [s["output"] for s in samples.values()] == in_plan_order and len(samples) == 12
    for key, s in samples.items():
        reference = tmp_path / "folder" / s["output"]
        assert s["data"] == reference.read_bytes(), f"{key}: not the bytes folder mode writes"
        with Image.open(io.BytesIO(s["data"])) as img:
            assert img.format == {"png": "PNG", "jpg": "JPEG"}[fmt] and img.size == (s["width"], s["height"]) \
                == (64, 48)
        assert key == s["output"].rsplit(".", 1)[0] and s["content"] in plan.contents and s["style"] in plan.styles
        assert s.get("ext", fmt) == fmt
    assert {r["output"]: r["shard"] for r in rows if not r["error"]} == {s["output"]: s["shard"]
                                                                         for s in samples.values()}


def test_a_failed_batch_of_a_shard_is_retried_pair_by_pair_into_it(tree, tmp_path, actor, monkeypatch):
    monkeypatch.setattr(actor.stylizer, "run", _fails_on_batches(actor.stylizer.run))
    plan = plan_dataset(tree[0], tmp_path / "out", tree[1], shards="parquet", shard_size=12)
    rows = _run_actor(actor, plan)
    assert not [r for r in rows if r["error"]] and {r["shard"] for r in rows} == {"shard-000000.parquet"}
    assert sorted(s["output"] for s in _shard_samples(tmp_path / "out", "parquet").values()) == sorted(
        plan.relative(o) for o in plan.outputs)


@pytest.mark.parametrize("error, message", [
    (OSError(28, os.strerror(28)), "No space left on device"),
    (ValueError("a bug or a library's complaint"), "ValueError: a bug or a library's complaint")])
def test_a_shard_that_cannot_be_written_fails_its_pairs_and_leaves_nothing(tree, tmp_path, actor, monkeypatch,
                                                                           error, message):
    """Any error while a shard is written (not only OSError: one that escaped would stop the whole Ray job)
    fails that shard's pairs, named in one line, and leaves no file."""
    from mambast.inference import shards

    def disk_full(tmp, image_format, samples, keys):
        for _, sample in zip(range(2), samples):   # two samples in, then the disk is full
            keys.append(sample.key)
        raise error
    monkeypatch.setattr(shards, "_write_tar", disk_full)
    plan = plan_dataset(tree[0], tmp_path / "out", tree[1], shards="webdataset", shard_size=6)
    rows = _run_actor(actor, plan, shards_done=1)
    assert len(rows) == 6 and {r["error"] for r in rows} == {
        f"shard-000000.tar: cannot write the shard ({message})"} and {r["shard"] for r in rows} == {""}
    assert os.listdir(tmp_path / "out") == []


def test_a_tar_whose_index_cannot_be_written_is_a_finished_shard(tree, tmp_path, monkeypatch):
    """The index only spares a rerun reading the tar through: failing to write it fails no pair, and leaves
    no index of an earlier write of that shard standing for the new tar."""
    from mambast.inference import shards
    out = tmp_path / "out"
    _write_shards(out, "webdataset", ["a/c0_stylized_s0.png"])   # an earlier write of shard 0, with its index
    atomic_write = shards.atomic_write

    def no_index(path, write, suffix):
        if suffix == ".json":
            raise OSError(28, os.strerror(28))
        return atomic_write(path, write, suffix=suffix)
    monkeypatch.setattr(shards, "atomic_write", no_index)
    done = [f"a/c{j}_stylized_s{k}.png" for j in range(3) for k in range(2)]
    _write_shards(out, "webdataset", done)   # returns: no error for the shard's pairs
    assert sorted(os.listdir(out)) == ["shard-000000.tar"]
    assert plan_dataset(tree[0], out, tree[1], shards="webdataset").present == 6


@pytest.mark.parametrize("kind", ["webdataset", "parquet"])
def test_a_rerun_skips_finished_shards_and_completes_them_in_new_ones(tree, tmp_path, actor, kind):
    """Two of three shards written, then a kill (a temp shard left; for a tar, its index not yet written): the
    rerun keeps the finished shards' pairs, removes the temp file, and writes the rest into a shard numbered
    after them; every pair is then in the shards once."""
    from mambast.inference.shards import SHARD_SUFFIXES, index_path
    out, suffix = tmp_path / "out", SHARD_SUFFIXES[kind]
    plan = plan_dataset(tree[0], out, tree[1], shards=kind, shard_size=4)
    _run_actor(actor, plan, shards_done=2)
    leftover = out / f".shard-000002.k2j_x9q1{suffix}"   # as atomic_write names its temp files
    leftover.write_bytes(b"half")
    if kind == "webdataset":
        index_path(out / "shard-000001.tar").unlink()   # killed between the shard's rename and its index's
    rerun = plan_dataset(tree[0], out, tree[1], shards=kind, shard_size=4)
    assert (len(rerun), rerun.present, rerun.first_shard) == (4, 8, 2) and not leftover.exists()
    assert not set(rerun.outputs) & {o for o in plan.outputs[:8]}
    _run_actor(actor, rerun)
    assert sorted(os.path.relpath(o, out) for o in plan.outputs) == sorted(
        s["output"] for s in _shard_samples(out, kind).values())
    assert sorted(p.name for p in out.glob(f"shard-*{suffix}")) == [f"shard-00000{i}{suffix}" for i in range(3)]
    done = plan_dataset(tree[0], out, tree[1], shards=kind)
    assert (len(done), done.present) == (0, 12)


def test_shard_settings_that_do_not_go_together_are_refused_in_one_line(tree, tmp_path):
    for kwargs, message in [({"shards": "tar"}, "--shards must be one of webdataset, parquet"),
                            ({"shards": "parquet", "shard_size": 0}, "--shard-size must be at least 1; got 0"),
                            ({"shard_size": 10}, "--shard-size applies with --shards"),
                            ({"shards": "webdataset", "overwrite": True}, "--overwrite does not apply to --shards")]:
        with pytest.raises(JobError, match=message):
            plan_dataset(tree[0], tmp_path / "out", tree[1], **kwargs)
    assert not (tmp_path / "out").exists()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "shard-000004.parquet").write_bytes(b"")
    for kwargs, message in [({}, "holds parquet shards of an earlier run .*add --shards parquet"),
                            ({"shards": "webdataset"}, "holds parquet shards .*resume them with --shards parquet"),
                            ({"shards": "parquet"}, "shard-000004.parquet: cannot read the shard")]:
        with pytest.raises(JobError, match=message):
            plan_dataset(tree[0], tmp_path / "out", tree[1], **kwargs)
    rows = ["content/a/c0.jpg,style/s0.png,x/y.jpg", "content/a/c1.jpg,style/s0.png,x/y.png"]
    (tmp_path / "m.csv").write_text("content,style,output\n" + "\n".join(rows) + "\n")
    plan = plan_dataset(tmp_path / "m.csv", tmp_path / "other", shards="webdataset")
    assert plan.failed == 2 and "x/y.jpg, x/y.png would be one sample" in plan.refused[0][0]
    assert len(plan_dataset(tmp_path / "m.csv", tmp_path / "other")) == 2   # two files in folder mode


@pytest.mark.parametrize("kind", ["webdataset", "parquet"])
def test_finished_shards_that_cannot_be_trusted_are_read_through_or_refused(tree, tmp_path, kind):
    """A tar cut short at a member boundary (a partial copy: tarfile sees fewer members, no error) is refused,
    also when its index lists every key; an index that is not its tar's (or not JSON) is not trusted (the tar
    is read through); a rerun with another --format, or into a folder tree, or beside shards of both kinds
    is refused in one line, before any work."""
    from mambast.inference.shards import index_path
    out = tmp_path / "out"
    done = [f"a/c{j}_stylized_s{k}.png" for j in range(3) for k in range(2)]
    shard = _write_shards(out, kind, done)
    plan = plan_dataset(tree[0], out, tree[1], shards=kind)
    assert (plan.present, len(plan), plan.first_shard) == (6, 6, 1)
    for fmt in ("jpg", "webp"):
        with pytest.raises(JobError, match="holds png shards.*--format png"):
            plan_dataset(tree[0], out, tree[1], shards=kind, format=fmt)
    if kind == "webdataset":
        index = index_path(shard)
        index.write_text("{not json")
        assert plan_dataset(tree[0], out, tree[1], shards=kind).present == 6   # read through the tar
        _write_shards(tmp_path / "other", kind, done[:2])
        index.write_bytes(index_path(tmp_path / "other" / shard.name).read_bytes())   # another tar's index
        assert plan_dataset(tree[0], out, tree[1], shards=kind).present == 6
        with tarfile.open(shard) as tar:
            members, end = tar.getmembers(), tar.offset
        data = shard.read_bytes()
        for cut in (members[4].offset, end, end + 512):   # before a member; before or in the end-of-archive marker
            shard.write_bytes(data[:cut])
            with pytest.raises(JobError, match="shard-000000.tar: cannot read the shard"):
                plan_dataset(tree[0], out, tree[1], shards=kind)
        shard.write_bytes(data)
    else:
        shard.write_bytes(shard.read_bytes()[:-100])
        with pytest.raises(JobError, match="shard-000000.parquet: cannot read the shard"):
            plan_dataset(tree[0], out, tree[1], shards=kind)
        _write_shards(out, kind, done)
    (out / "a").mkdir()   # a tree run's folder: its images would not be resumed, and shards would go beside it
    with pytest.raises(JobError, match="holds the outputs of a run without --shards .*a"):
        plan_dataset(tree[0], out, tree[1], shards=kind)
    (out / "a").rmdir()
    other = "parquet" if kind == "webdataset" else "webdataset"
    _write_shards(out, other, done[:1], number=1)
    with pytest.raises(JobError, match="holds shards of both kinds"):
        plan_dataset(tree[0], out, tree[1], shards=kind)


def test_names_that_are_not_utf8_are_refused_pairs_not_a_crash(tree, tmp_path):
    """A file name of bytes that are not UTF-8 (legal on Linux) cannot travel in Ray's Arrow tables nor be
    stored in a shard: its pairs are refused (the others go on), and an output folder of such a name is
    refused in one line."""
    pa = pytest.importorskip("pyarrow")
    from mambast.inference.ray_engine import shard_rows
    bad = os.path.join(os.fsencode(tree[0]), b"a", b"bad\xff.jpg")
    try:
        _img(Path(os.fsdecode(bad)))
    except OSError:
        pytest.skip("the file system takes UTF-8 names only")
    for shards in (None, "webdataset"):
        plan = plan_dataset(tree[0], tmp_path / "out", tree[1], shards=shards)
        assert len(plan) == 12 and plan.failed == 2 and len(plan.refused) == 1, plan.refused
        assert "bad\\xff.jpg: the name is not UTF-8" in plan.refused[0][0]
        pa.table({"content": plan.contents, "style": plan.styles, "output": plan.outputs})
        if shards:
            pa.table({k: [row[k] for row in shard_rows(plan)] for k in ("shard", "content", "output")})
    with pytest.raises(JobError, match="not UTF-8"):
        plan_dataset(tree[0], Path(os.fsdecode(os.path.join(os.fsencode(tmp_path), b"out\xff"))), tree[1])


def test_the_shard_flags_on_the_command_line(tree, tmp_path, capsys):
    pytest.importorskip("ray.data")
    from mambast.cli import main
    out = tmp_path / "out"
    args = ["stylize-dataset", str(tree[0]), str(tree[1]), "-o", str(out)]
    for extra, message in [(["--shards", "parquet", "--shard-size", "0"], "--shard-size must be at least 1"),
                           (["--shard-size", "5"], "--shard-size applies with --shards"),
                           (["--shards", "webdataset", "--overwrite"], "--overwrite does not apply")]:
        assert main(args + extra) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err and not out.exists(), err
    with pytest.raises(SystemExit) as e:
        main(args + ["--shards", "tar"])
    assert e.value.code == 2 and "invalid choice: 'tar' (choose from webdataset, parquet)" in \
        capsys.readouterr().err.replace("'webdataset'", "webdataset").replace("'parquet'", "parquet")
    with pytest.raises(SystemExit):
        main(["stylize-dataset", "--help"])
    text = capsys.readouterr().out
    assert "--shards {webdataset,parquet}" in text and "--shard-size N" in text and "default 1000" in text


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
# Parquet shards are left out here (30 s a run): they differ from tar shards only in the writing and reading of a
# shard, which the in-process shard tests cover; the tar's two renames (shard, then its index) are the part a kill
# can split.
@pytest.mark.parametrize("shards", [None, "webdataset"])
def test_ray_run_killed_midway_resumes_to_every_output_once(tree, tmp_path, tiny_model, shards):
    """The Ray path on CPU: SIGKILL the whole run (driver, local Ray, actors) once outputs (or shards) appear,
    rerun; every pair is written once, decodable, at its content's size, as the single-process path makes it;
    the bad image is in the errors file; no temp file is left."""
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
    cmd += ["--shards", shards, "--shard-size", "2"] if shards else []

    def images() -> dict[str, bytes]:   # relative output name -> image: the files, or the finished shards' samples
        if shards:
            return {s["output"]: s["data"] for s in _shard_samples(out, shards).values()}
        return {p.relative_to(out).as_posix(): p.read_bytes() for p in _outputs(out) if p.suffix == ".png"}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not _outputs(out) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    _kill_session(proc.pid)   # the driver, the Ray it started and its actors at once, as a crash would
    proc.wait()
    done_before = len(images())
    assert 1 <= done_before < 12, f"{done_before} outputs when killed: not midway"

    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 1, rerun.stderr   # the bad image failed; everything else was done
    assert "WARNING" not in rerun.stderr, rerun.stderr   # --quiet: Ray's start-up warnings too
    summary = rerun.stderr.strip().splitlines()[-2]
    assert summary.startswith(f"{12 - done_before} stylized, {done_before} already present, 2 failed"), summary
    expected = sorted(f"{d}/c{j}_stylized_s{k}.png" for d in "ab" for j in range(3) for k in range(2))
    written = images()   # a sample twice fails here
    assert sorted(written) == expected
    if not shards:
        assert _outputs(out) == sorted([out / e for e in expected] + [out / ERRORS_FILE])
    assert not [p for p in out.rglob(".*")], "temp files left"
    errors = [json.loads(line) for line in (out / ERRORS_FILE).read_text().splitlines()]
    assert sorted(Path(e["output"]).name for e in errors) == ["bad_stylized_s0.png", "bad_stylized_s1.png"]
    assert all(e["content"].endswith("bad.jpg") and "\n" not in e["error"] and e["error"] for e in errors)

    config = StylizeConfig(size=512, seed=0, device="cpu").resolved()
    reference = tmp_path / "reference"
    jobs = [Job(tree[0] / d / "c1.jpg", tree[1] / "s1.png", reference / f"{d}.png") for d in "ab"]
    assert all(e is None for _, e in Stylizer.from_config(load_model(tmp_path / "model", config), config).run(jobs))
    for data in written.values():
        img = Image.open(io.BytesIO(data))
        img.load()
        assert img.size == (64, 48)
    for d in "ab":
        ours = np.asarray(Image.open(io.BytesIO(written[f"{d}/c1_stylized_s1.png"]))).astype(int)
        assert np.abs(ours - np.asarray(Image.open(reference / f"{d}.png")).astype(int)).max() <= 1
