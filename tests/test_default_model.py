import json

import torch

from mambast import MambaST, stylize
from mambast.weights import DEFAULT_MODEL_DIR, MAX_DEFAULT_MODEL_BYTES


def test_default_model_ships_small_and_loads():
    size = sum(f.stat().st_size for f in DEFAULT_MODEL_DIR.iterdir())
    assert size <= MAX_DEFAULT_MODEL_BYTES
    m = MambaST.from_pretrained("default")
    assert m.config.dim == 512 and not m.training


def test_default_model_int8_matches_float32_within_two_percent():
    """Packaging measured the int8 file against the float32 weights (which are not shipped)."""
    info = json.loads((DEFAULT_MODEL_DIR / "quantization.json").read_text())
    assert info["max_rel_output_diff_vs_float32"] < 0.02


def test_default_model_stylizes():
    g = torch.Generator().manual_seed(0)
    content = torch.nn.functional.interpolate(torch.rand(1, 3, 6, 9, generator=g), size=(48, 72), mode="bilinear")
    style = torch.rand(1, 3, 40, 40, generator=g)
    out = stylize(content, style, size=None, seed=0, output_type="pt").cpu()   # on the GPU where there is one
    assert out.shape == (1, 3, 48, 72)
    assert torch.isfinite(out).all() and out.std() > 0.01
    # a trained model keeps the content's layout: the output correlates with the content
    gray = lambda x: x.mean(1).flatten()  # noqa: E731
    corr = torch.corrcoef(torch.stack([gray(out), gray(content)]))[0, 1]
    assert corr > 0.3


def test_bfloat16_output_close_to_float32():
    g = torch.Generator().manual_seed(1)
    content = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 8, generator=g), size=(64, 64), mode="bicubic")
    style = torch.rand(1, 3, 64, 64, generator=g)
    m = MambaST.from_pretrained("default")
    a = stylize(content.clamp(0, 1), style, model=m, size=None, seed=0, dtype="float32", output_type="pt")
    b = stylize(content.clamp(0, 1), style, model=m, size=None, seed=0, dtype="bfloat16", output_type="pt")
    assert ((a - b).norm() / a.norm()).item() < 1e-2


def test_default_model_records_its_training():
    """training.json: totals that add up over contiguous runs, as scripts/package_default_model.py writes them."""
    record = json.loads((DEFAULT_MODEL_DIR / "training.json").read_text())["training"]
    runs = record["runs"]
    assert runs[0]["steps"][0] == 0 and record["iterations"] == runs[-1]["steps"][1]
    assert all(a["steps"][1] == b["steps"][0] for a, b in zip(runs, runs[1:]))
    assert record["samples_seen"] == sum((r["steps"][1] - r["steps"][0]) * r["batch_size"] * r["processes"]
                                         for r in runs) == sum(r["samples"] for r in runs)
    assert record["batch_size"] == runs[-1]["batch_size"] and record["git_commit"] == runs[-1]["git_commit"]


def _script(name: str):
    """A maintainers' script from scripts/ (not a package) as a module."""
    import importlib.util
    from pathlib import Path
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_packaging_chains_runs_and_refuses_a_gap():
    import pytest
    pkg = _script("package_default_model")
    first = pkg.training_record({"step": 100, "train_config": {"batch_size": 8, "vgg": "/a/b/vgg.safetensors"}}, "abc")
    assert first["samples_seen"] == 800 and first["runs"][0]["train_config"]["vgg"] == "vgg.safetensors"
    second = pkg.training_record({"step": 150, "world_size": 2, "train_config": {"batch_size": 4, "init_step": 100}},
                                 "def", first["runs"])
    assert second["iterations"] == 150 and second["samples_seen"] == 800 + 50 * 4 * 2
    assert [r["git_commit"] for r in second["runs"]] == ["abc", "def"] and second["git_commit"] == "def"
    with pytest.raises(ValueError, match="--previous"):
        pkg.training_record({"step": 150, "train_config": {"batch_size": 8, "init_step": 100}})
    with pytest.raises(ValueError, match="end at step 100"):
        pkg.training_record({"step": 300, "train_config": {"batch_size": 8, "init_step": 200}}, None, first["runs"])


def _logs(tmp_path, terms, runs):
    import csv
    import random
    paths = []
    for i, steps in enumerate(runs):
        paths.append(tmp_path / f"run{i}.csv")
        with open(paths[-1], "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["step", *terms, "lr"])
            w.writerows([s, *(random.random() for _ in terms), 1e-4] for s in steps)
    return paths


def test_training_log_of_several_runs_is_one_log(tmp_path):
    """scripts/plot_training_log.py: a continued run's rows follow the earlier run's; where it restarted from an
    older step its rows replace the earlier run's; the curve is the mean over the window; a file that is not a
    trainer log is refused."""
    import csv

    import pytest
    plot = _script("plot_training_log")
    logs = _logs(tmp_path, plot.TERMS, [range(10, 110, 10), range(90, 210, 10)])   # the second redoes 90, 100
    plot.write_csv(plot.read_runs(logs), tmp_path / "all.csv", first_run=2)
    rows = list(csv.DictReader(open(tmp_path / "all.csv")))
    assert [int(r["step"]) for r in rows] == list(range(10, 210, 10))
    assert [r["run"] for r in rows] == ["2"] * 8 + ["3"] * 12    # steps 90 and 100 from the run that redid them
    steps, values = [int(r["step"]) for r in rows], [float(r["total"]) for r in rows]
    want = [sum(v for s2, v in zip(steps, values) if s - 30 < s2 <= s) / sum(1 for s2 in steps if s - 30 < s2 <= s)
            for s in steps]
    assert plot.smoothed(steps, values, 30) == pytest.approx(want)
    # the whole log written above, continued by one more run, is again one log: runs 2, 3 and then 4
    (tmp_path / "more").mkdir()
    more = _logs(tmp_path / "more", plot.TERMS, [range(210, 260, 10)])
    assert plot.first_run_number(tmp_path / "all.csv") == 2 and plot.first_run_number(more[0]) == 1
    plot.write_csv(plot.read_runs([tmp_path / "all.csv", *more]), tmp_path / "all.csv", first_run=2)
    rows = list(csv.DictReader(open(tmp_path / "all.csv")))
    assert [int(r["step"]) for r in rows] == list(range(10, 260, 10))
    assert [r["run"] for r in rows] == ["2"] * 8 + ["3"] * 12 + ["4"] * 5
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(SystemExit, match="not a trainer log"):
        plot.main([str(tmp_path / "bad.csv"), "--out", str(tmp_path / "x.png")])


def test_training_log_picture(tmp_path):
    import pytest
    pytest.importorskip("matplotlib")
    plot = _script("plot_training_log")
    logs = _logs(tmp_path, plot.TERMS, [range(10, 110, 10), range(110, 210, 10)])
    assert plot.main([str(p) for p in logs] + ["--out", str(tmp_path / "loss.png")]) == 0
    assert (tmp_path / "loss.png").stat().st_size > 0
