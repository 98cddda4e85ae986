"""evaluate(): stylize every pair, resume, score an existing folder, write metrics.json / CSV / contact sheet
(tiny stand-in metric networks, tiny images: no downloads)."""

from __future__ import annotations

import argparse
import csv
import json

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from conftest import TinyVGG
from mambast.metrics.evaluate import (ART_INCEPTION_NOTE, CFSD_NOTE, PROTOCOL_PAIRS, EvaluationError, MetricNetworks, evaluate,
                              load_square, pair_seed, stylized_name)
from mambast.networks.lpips import LPIPS

SIZE = 32


class TinyInception(nn.Module):
    """Stand-in: [N, 3, 299, 299] -> [N, 8] pooled conv features."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 7, stride=4)

    def forward(self, x):
        return F.adaptive_avg_pool2d(F.relu(self.conv(x)), 1).flatten(1)


@pytest.fixture
def nets():
    torch.manual_seed(0)
    lp = LPIPS().eval()
    with torch.no_grad():
        for head in lp.heads:
            head.weight.abs_()
    return MetricNetworks(inception=TinyInception().eval(), lpips=lp, vgg=TinyVGG().eval())


@pytest.fixture
def folders(tmp_path):
    """2 content and 2 style images of assorted sizes and formats."""
    rng = np.random.default_rng(0)
    content, style = tmp_path / "content", tmp_path / "style"
    content.mkdir()
    style.mkdir()
    for folder, names, sizes in ((content, ["a.png", "b.jpg"], [(48, 40), (40, 56)]),
                                 (style, ["x.png", "y.png"], [(32, 32), (64, 40)])):
        for name, (w, h) in zip(names, sizes):
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / name)
    return content, style


class Blend:
    """A stand-in method: half content, half the style's mean colour; records its calls."""

    name = "blend"

    def __init__(self):
        self.calls = []

    def __call__(self, content, style, seed):
        self.calls.append(seed)
        return 0.5 * content + 0.5 * style.mean(dim=(2, 3), keepdim=True)


def test_evaluate_stylizes_every_pair_and_writes_reports(folders, nets, tmp_path):
    content, style = folders
    out = tmp_path / "out"
    method = Blend()
    report = evaluate(content, style, model=method, outputs_dir=out, size=SIZE, seed=3, networks=nets,
                      progress=False)
    names = sorted(p.name for p in out.glob("*_stylized_*.png"))
    assert names == ["a_stylized_x.png", "a_stylized_y.png", "b_stylized_x.png", "b_stylized_y.png"]
    assert all(Image.open(out / n).size == (SIZE, SIZE) for n in names)
    assert len(method.calls) == 4

    saved = json.loads((out / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(report))
    for key in ("artfid", "fid", "lpips", "cfsd"):
        assert np.isfinite(saved[key]) and saved[key] > 0
    assert saved["artfid"] == pytest.approx((1 + saved["lpips"]) * (1 + saved["fid"]))
    assert saved["counts"] == {"content": 2, "style": 2, "stylized": 4}
    assert saved["seed"] == 3 and saved["size"] == SIZE and saved["model"] == "blend"
    assert ART_INCEPTION_NOTE in saved["notes"]
    assert {"torch", "numpy", "mambast"} <= set(saved["versions"])
    assert saved["stylize"]["new_images"] == 4

    rows = list(csv.DictReader(open(out / "per_image.csv")))
    assert [(r["content"], r["style"]) for r in rows] == [("a.png", "x.png"), ("a.png", "y.png"),
                                                          ("b.jpg", "x.png"), ("b.jpg", "y.png")]
    assert np.mean([float(r["lpips"]) for r in rows]) == pytest.approx(saved["lpips"], rel=1e-6)
    sheet = Image.open(out / "contact_sheet.png")
    assert sheet.size == (3 * (256 + 2) + 2, 3 * (256 + 2) + 2)      # tiles large enough to see the style


def test_evaluate_resumes_and_only_fills_missing_outputs(folders, nets, tmp_path):
    content, style = folders
    out = tmp_path / "out"
    first = evaluate(content, style, model=Blend(), outputs_dir=out, size=SIZE, networks=nets, progress=False)
    (out / "b_stylized_y.png").unlink()
    method = Blend()
    second = evaluate(content, style, model=method, outputs_dir=out, size=SIZE, networks=nets, progress=False)
    assert method.calls == [pair_seed(0, content / "b.jpg", style / "y.png")]
    assert second["stylize"] == {**second["stylize"], "new_images": 1, "already_present": 3}
    for key in ("artfid", "fid", "lpips", "cfsd"):
        assert second[key] == pytest.approx(first[key], rel=1e-6)


def test_scoring_copies_of_the_content_gives_zero_lpips_and_cfsd(folders, nets, tmp_path):
    content, style = folders
    out = tmp_path / "copies"
    out.mkdir()
    for c in sorted(content.iterdir()):
        for s in sorted(style.iterdir()):
            Image.open(c).convert("RGB").save(out / stylized_name(c, s))   # full size: scoring crops it
    report = evaluate(content, style, model=None, outputs_dir=out, size=SIZE, networks=nets, progress=False)
    assert report["lpips"] < 0.02           # JPEG-free copies; tiny resampling differences only
    assert report["cfsd"] < 1e-3
    assert "stylize" not in report and report["model"].startswith("none")


def test_scoring_requires_every_stylized_image(folders, nets, tmp_path):
    content, style = folders
    out = tmp_path / "partial"
    out.mkdir()
    Image.new("RGB", (SIZE, SIZE)).save(out / "a_stylized_x.png")
    with pytest.raises(EvaluationError, match="3 of 4 stylized images missing"):
        evaluate(content, style, model=None, outputs_dir=out, size=SIZE, networks=nets, progress=False)


def test_evaluate_rejects_bad_arguments(folders, nets, tmp_path):
    content, style = folders
    with pytest.raises(EvaluationError, match="no such folder"):
        evaluate(tmp_path / "nope", style, model=Blend(), outputs_dir=tmp_path / "o", networks=nets)
    with pytest.raises(EvaluationError, match="metrics must be"):
        evaluate(content, style, model=Blend(), metrics=("fid", "ssim"), networks=nets)
    with pytest.raises(EvaluationError, match="model must be"):
        evaluate(content, style, model=42, outputs_dir=tmp_path / "o", networks=nets)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(EvaluationError, match="has no images"):
        evaluate(content, empty, model=Blend(), networks=nets)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(EvaluationError, match="exists and is not a folder"):
        evaluate(content, style, model=Blend(), outputs_dir=tmp_path / "afile", networks=nets)
    with pytest.raises(EvaluationError, match="exists and is not a folder"):
        evaluate(content, style, model=None, outputs_dir=tmp_path / "afile", networks=nets)
    for size, metrics in ((16, ("fid", "lpips")), (24, ("cfsd",)), (4, ("fid",)), (4097, ("fid",))):
        with pytest.raises(EvaluationError, match=f"size must be in .*got {size}"):   # before the networks' errors
            evaluate(content, style, model=Blend(), size=size, metrics=metrics, networks=nets)
    with pytest.raises(EvaluationError, match="cannot make the outputs folder"):
        evaluate(content, style, model=Blend(), outputs_dir=tmp_path / "afile" / "sub", size=SIZE, networks=nets,
                 progress=False)


def test_evaluate_with_a_subset_of_metrics(folders, tmp_path):
    content, style = folders
    torch.manual_seed(0)
    nets = MetricNetworks(inception=TinyInception().eval())
    report = evaluate(content, style, model=Blend(), outputs_dir=tmp_path / "o", size=SIZE, metrics=("fid",),
                      networks=nets, progress=False)
    assert "fid" in report and "lpips" not in report and "artfid" not in report and "cfsd" not in report
    with pytest.raises(EvaluationError, match="no network for lpips"):
        evaluate(content, style, model=None, outputs_dir=tmp_path / "o", size=SIZE, metrics=("fid", "lpips"),
                 networks=nets, progress=False)


def test_evaluate_with_a_tiny_mambast_is_reproducible(folders, nets, tmp_path, tiny_model):
    content, style = folders
    for run in ("one", "two"):
        evaluate(content, style, model=tiny_model, outputs_dir=tmp_path / run, size=SIZE, seed=7, networks=nets,
                 progress=False)
    for p in sorted((tmp_path / "one").glob("*_stylized_*.png")):
        assert np.array_equal(np.asarray(Image.open(p)), np.asarray(Image.open(tmp_path / "two" / p.name)))


def test_load_square_resizes_the_short_side_and_centre_crops(tmp_path):
    a = np.zeros((40, 80, 3), np.uint8)
    a[:, 20:60] = 255                      # a white centre band as wide as the crop
    Image.fromarray(a).save(tmp_path / "wide.png")
    x = load_square(tmp_path / "wide.png", 20)
    assert x.shape == (1, 3, 20, 20)
    assert x[..., 2:-2].min().item() > 0.9


def test_pair_seed_is_stable_and_distinct():
    assert pair_seed(0, "c/01.jpg", "s/02.jpg") == pair_seed(0, "other/01.png", "x/02.png")
    assert pair_seed(0, "01", "02") != pair_seed(1, "01", "02") != pair_seed(0, "02", "01")


def test_eval_subcommand_parses_and_reports_bad_input_in_one_line(tmp_path, capsys):
    from mambast.metrics.cli import register
    parser = argparse.ArgumentParser(prog="mambast")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["eval", "--content", "c", "--style", "s", "--metrics", "fid,lpips"])
    assert args.metrics == ("fid", "lpips") and args.size == 512 and args.seed == 0 and args.model == "default"
    assert callable(args.func)
    with pytest.raises(SystemExit):
        parser.parse_args(["eval", "--content", "c", "--style", "s", "--metrics", "ssim"])
    capsys.readouterr()                     # drop argparse's usage message

    from mambast.cli import main
    code = main(["eval", "--content", str(tmp_path / "missing"), "--style", str(tmp_path), "--model", "none"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1 and "missing: no such folder (content)" in err
    (tmp_path / "c.png").write_bytes(b"")
    code = main(["eval", "--content", str(tmp_path / "c.png"), "--style", str(tmp_path), "--model", "none"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and "c.png: is a file; give the folder of images (content)" in err


def test_cached_encodings_give_the_results_of_one_call_per_pair(tiny_model):
    from mambast.metrics.evaluate import _mambast_stylizer
    g = torch.Generator().manual_seed(0)
    contents = [torch.rand(1, 3, 24, 24, generator=g) for _ in range(2)]
    styles = [torch.rand(1, 3, 24, 24, generator=g) for _ in range(3)]
    plain, cached = _mambast_stylizer(tiny_model), _mambast_stylizer(tiny_model, cache_tokens=True)
    calls = {"content": 0, "style": 0}
    for role in calls:
        f = getattr(tiny_model, f"encode_{role}")
        setattr(tiny_model, f"encode_{role}", lambda x, f=f, role=role: calls.__setitem__(role, calls[role] + 1) or f(x))
    for i, c in enumerate(contents):
        for j, s in enumerate(styles):
            a, b = cached(c, s, 10 * i + j), plain(c, s, 10 * i + j)
            assert torch.equal(a, b)
    # plain: 6 pairs encode both; cached: 2 contents + 3 styles once each
    assert calls == {"content": 6 + 2, "style": 6 + 3}


def test_cached_style_tokens_depend_on_the_content_working_size(tiny_model):
    """Two contents of different sizes that pad to one shape fit the same style differently."""
    from mambast.metrics.evaluate import _mambast_stylizer
    from mambast.inference.stylizer import stylize_tensor
    g = torch.Generator().manual_seed(1)
    style = torch.rand(1, 3, 40, 30, generator=g)
    cached = _mambast_stylizer(tiny_model, cache_tokens=True)
    for w in (18, 21):   # both pad to 24
        c = torch.rand(1, 3, 16, w, generator=g)
        assert torch.equal(cached(c, style, 3), stylize_tensor(tiny_model, c, style, size=None, seed=3))


def test_report_labels_each_metric_with_direction_and_meaning(folders, nets, tmp_path):
    content, style = folders
    report = evaluate(content, style, model=Blend(), outputs_dir=tmp_path / "o", size=SIZE, networks=nets,
                      progress=False)
    info = report["metrics_info"]
    assert set(info) == {"artfid", "fid", "lpips", "cfsd"}
    assert all(v["direction"] == "↓" and v["meaning"] for v in info.values())
    assert info["cfsd"]["label"] == "CFSD on our VGG-19" and "not comparable with StyleID" in info["cfsd"]["meaning"]
    assert "clean-fid" in info["fid"]["label"]
    assert CFSD_NOTE in report["notes"] and "not comparable with StyleID" in CFSD_NOTE
    assert "clean-fid" in ART_INCEPTION_NOTE and "clean-fid" in report["protocol"]
    # 4 images, not the protocol's 800: FID is noise and the report says so
    assert len(report["warnings"]) == 1 and f"fewer than the protocol's {PROTOCOL_PAIRS}" in report["warnings"][0]


def test_contact_sheet_at_full_size(folders, nets, tmp_path):
    content, style = folders
    evaluate(content, style, model=Blend(), outputs_dir=tmp_path / "o", size=SIZE, networks=nets, thumb=None,
             progress=False)
    assert Image.open(tmp_path / "o" / "contact_sheet.png").size == (3 * (SIZE + 2) + 2, 3 * (SIZE + 2) + 2)
    with pytest.raises(EvaluationError, match="thumb must be"):
        evaluate(content, style, model=Blend(), outputs_dir=tmp_path / "o", size=SIZE, networks=nets, thumb=0)


@pytest.mark.parametrize("into", ["content", "style"])
def test_outputs_in_an_input_folder_are_not_scored_as_inputs(folders, nets, into):
    content, style = folders
    out = content if into == "content" else style
    first = evaluate(content, style, model=Blend(), outputs_dir=out, size=SIZE, networks=nets, progress=False)
    assert first["counts"] == {"content": 2, "style": 2, "stylized": 4}
    method = Blend()
    second = evaluate(content, style, model=method, outputs_dir=out, size=SIZE, networks=nets, progress=False)
    assert second["counts"] == first["counts"] and method.calls == []        # nothing new: a plain rerun
    assert second["fid"] == pytest.approx(first["fid"], rel=1e-6)
    assert any("5 image(s) in the input folders" in w for w in second["warnings"])   # 4 outputs + the sheet
    scored = evaluate(content, style, model=None, outputs_dir=out, size=SIZE, networks=nets, progress=False)
    assert scored["counts"]["stylized"] == 4


def test_eval_command_prints_direction_meaning_and_warnings(folders, nets, tmp_path, capsys, monkeypatch):
    from mambast.cli import main
    content, style = folders
    out = tmp_path / "o"
    evaluate(content, style, model=Blend(), outputs_dir=out, size=SIZE, networks=nets, progress=False)
    monkeypatch.setattr(MetricNetworks, "load", classmethod(lambda cls, metrics, device, cache=None: nets))
    code = main(["eval", "--content", str(content), "--style", str(style), "--outputs", str(out), "--model", "none",
                 "--size", str(SIZE), "--quiet"])
    captured = capsys.readouterr()
    assert code == 0
    lines = captured.out.splitlines()
    assert [ln.split(" ↓ ")[0] for ln in lines[:4]] == ["ArtFID", "FID (standard Inception, clean-fid preprocessing)",
                                                       "LPIPS (AlexNet)", "CFSD on our VGG-19"]
    assert all("(" in ln for ln in lines[:4]) and "4 images" in lines[4]
    assert "mambast: warning: 4 stylized images, fewer than the protocol's 800" in captured.err
