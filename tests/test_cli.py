import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mambast.cli import main
from test_io import bad_files


@pytest.fixture
def weights(tmp_path_factory, tiny_model):
    d = tmp_path_factory.mktemp("w")
    tiny_model.save_pretrained(d)
    return d


def _img(path, w, h, seed=0):
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def test_stylize_single_pair_keeps_content_size(tmp_path, weights):
    c = _img(tmp_path / "c.png", 37, 21)
    s = _img(tmp_path / "s.jpg", 50, 64, seed=1)
    out = tmp_path / "out.png"
    assert main(["stylize", str(c), str(s), "-o", str(out), "--model", str(weights), "--size", "24", "--seed", "3"]) == 0
    assert Image.open(out).size == (37, 21)
    first = np.asarray(Image.open(out))
    out.unlink()
    assert main(["stylize", str(c), str(s), "-o", str(out), "--model", str(weights), "--size", "24", "--seed", "3"]) == 0
    assert np.array_equal(first, np.asarray(Image.open(out))), "same seed, same output"


def test_stylize_tiny_and_strip_images(tmp_path, weights):
    for i, (w, h) in enumerate([(1, 1), (3, 2), (200, 9)]):
        c = _img(tmp_path / f"c{i}.png", w, h, seed=i)
        s = _img(tmp_path / f"s{i}.png", 13, 40, seed=i + 9)
        out = tmp_path / f"o{i}.png"
        assert main(["stylize", str(c), str(s), "-o", str(out), "--model", str(weights), "--size", "0"]) == 0
        assert Image.open(out).size == (w, h)


def test_stylize_folders_resumes_and_reports_bad_files(tmp_path, weights, capsys):
    cdir, sdir, odir = tmp_path / "c", tmp_path / "s", tmp_path / "o"
    cdir.mkdir(), sdir.mkdir()
    _img(cdir / "a.png", 20, 16), _img(cdir / "b.jpg", 16, 24, 1)
    (cdir / "broken.jpg").write_text("not an image")
    _img(sdir / "x.png", 30, 30, 2), _img(sdir / "y.png", 16, 16, 3)
    args = ["stylize", str(cdir), str(sdir), "-o", str(odir), "--model", str(weights), "--size", "16", "--quiet"]
    assert main(args) == 1  # a bad file makes the run fail, after the others were done
    err = capsys.readouterr().err
    assert "broken.jpg" in err
    names = sorted(p.name for p in odir.iterdir())
    assert names == ["a_stylized_x.png", "a_stylized_y.png", "b_stylized_x.png", "b_stylized_y.png"]
    (cdir / "broken.jpg").unlink()
    mtime = (odir / "a_stylized_x.png").stat().st_mtime_ns
    assert main(args) == 0
    assert (odir / "a_stylized_x.png").stat().st_mtime_ns == mtime, "existing outputs are skipped"
    assert main(args + ["--overwrite"]) == 0
    assert (odir / "a_stylized_x.png").stat().st_mtime_ns != mtime


@pytest.mark.parametrize("kind", ["empty", "text", "truncated", "bomb", "folder", "missing", "link_loop"])
def test_bad_content_is_one_line_error_and_no_output(tmp_path, weights, capsys, kind):
    bad = bad_files(tmp_path)[kind]
    s = _img(tmp_path / "s.png", 16, 16)
    out = tmp_path / "out.png"
    code = main(["stylize", str(bad), str(s), "-o", str(out), "--model", str(weights)])
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert not out.exists()
    assert err.count("\n") == 0 and err.startswith("mambast: error:") and bad.name in err
    assert "Traceback" not in err


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="symbolic links")
@pytest.mark.parametrize("role", ["content", "style", "mask"])
def test_a_symbolic_link_loop_is_named_as_one_with_the_status_of_a_missing_file(tmp_path, weights, capsys, role):
    loop, missing = tmp_path / "loop.png", tmp_path / "missing.png"
    loop.symlink_to(loop.name)
    files = {"content": _img(tmp_path / "c.png", 16, 16), "style": _img(tmp_path / "s.png", 16, 16, 1)}
    codes = []
    for bad in (missing, loop):
        paths = {**files, role: bad}
        mask = ["--mask", str(paths["mask"])] if "mask" in paths else []
        codes.append(main(["stylize", str(paths["content"]), str(paths["style"]), "-o", str(tmp_path / "o.png"),
                           "--model", str(weights), *mask]))
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and bad.name in err, err
    assert "symbolic-link loop" in err and "no such file" not in err
    assert codes[0] == codes[1] == 1 and not (tmp_path / "o.png").exists()


def test_bad_checkpoint_is_one_line_error(tmp_path, capsys, official_files):
    paths, _ = official_files
    import torch
    sd = torch.load(paths["decoder"], weights_only=True)
    sd["1.weight"] = torch.zeros(1, 1, 3, 3)
    torch.save(sd, paths["decoder"])
    code = main(["convert", "--mamba", str(paths["mamba"]), "--decoder", str(paths["decoder"]),
                 "--embedding", str(paths["embedding"]), "-o", str(tmp_path / "conv")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and "cnn_decoder.1.weight" in err and "\n" not in err


def test_convert_then_stylize(tmp_path, official_files):
    paths, _ = official_files
    assert main(["convert", "--mamba", str(paths["mamba"]), "--decoder", str(paths["decoder"]),
                 "--embedding", str(paths["embedding"]), "-o", str(tmp_path / "conv")]) == 0
    c, s = _img(tmp_path / "c.png", 16, 16), _img(tmp_path / "s.png", 16, 16, 1)
    assert main(["stylize", str(c), str(s), "-o", str(tmp_path / "o.png"), "--model", str(tmp_path / "conv")]) == 0


def test_convert_takes_the_model_size_from_config(tmp_path, official_files, capsys):
    paths, model = official_files
    files = ["--mamba", str(paths["mamba"]), "--decoder", str(paths["decoder"]), "--embedding", str(paths["embedding"])]
    assert main(["convert", *files, "-o", str(tmp_path / "conv"), "--config", model.config.to_json()]) == 0
    assert json.loads((tmp_path / "conv" / "config.json").read_text()) == json.loads(model.config.to_json())
    capsys.readouterr()
    other = json.loads(model.config.to_json()) | {"dim": model.config.dim * 2}
    assert main(["convert", *files, "-o", str(tmp_path / "conv2"), "--config", json.dumps(other)]) == 1
    err = capsys.readouterr().err.strip()
    assert "the model expects" in err and "\n" not in err and not (tmp_path / "conv2").exists()
    assert main(["convert", *files, "-o", str(tmp_path / "conv3"), "--config", "nonsense"]) == 1
    assert "config must be one of" in capsys.readouterr().err


def test_refuses_to_overwrite_an_input(tmp_path, weights, capsys):
    c, s = _img(tmp_path / "c.png", 16, 16), _img(tmp_path / "s.png", 16, 16, 1)
    assert main(["stylize", str(c), str(s), "-o", str(c), "--model", str(weights), "--overwrite"]) == 1
    assert "input" in capsys.readouterr().err


def test_console_help_runs():
    done = subprocess.run([sys.executable, "-m", "mambast", "stylize", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--size" in done.stdout and "mirror-tiled" in done.stdout


def test_folder_run_batch_size_does_not_change_results(tmp_path, weights):
    cdir, sdir = tmp_path / "c", tmp_path / "s"
    cdir.mkdir(), sdir.mkdir()
    _img(cdir / "a.png", 20, 16), _img(cdir / "b.png", 20, 16, 1), _img(cdir / "c.png", 17, 30, 2)
    _img(sdir / "x.png", 30, 30, 3), _img(sdir / "y.jpg", 16, 40, 4)
    outs = {}
    for b in ("1", "4"):
        odir = tmp_path / f"o{b}"
        assert main(["stylize", str(cdir), str(sdir), "-o", str(odir), "--model", str(weights), "--size", "16",
                     "--seed", "7", "--batch-size", b, "--quiet"]) == 0
        outs[b] = {p.name: np.asarray(Image.open(p)).astype(int) for p in odir.iterdir()}
    assert sorted(outs["1"]) == sorted(outs["4"]) and len(outs["1"]) == 6
    for name, img in outs["1"].items():
        assert np.abs(img - outs["4"][name]).max() <= 1, name


def test_inputs_that_map_to_one_output_name_are_skipped_and_reported(tmp_path, weights, capsys):
    cdir = tmp_path / "c"
    cdir.mkdir()
    _img(cdir / "a.png", 16, 16), _img(cdir / "a.jpg", 16, 16, 1), _img(cdir / "b.png", 16, 16, 3)
    s = _img(tmp_path / "s.png", 16, 16, 2)
    code = main(["stylize", str(cdir), str(s), "-o", str(tmp_path / "o"), "--model", str(weights), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1
    assert [line for line in err.splitlines() if "error" in line] == [
        "mambast: error: a_stylized_s.png: a.jpg + s.png and a.png + s.png would all be written there: skipped "
        "(rename one of the inputs)"]
    assert "1 stylized, 0 already present, 2 failed" in err
    assert [p.name for p in (tmp_path / "o").iterdir()] == ["b_stylized_s.png"]


def test_output_folder_that_is_also_the_input_folder_resumes(tmp_path, weights):
    d = tmp_path / "d"
    d.mkdir()
    _img(d / "a.png", 16, 16), _img(d / "s.png", 16, 16, 1)
    args = ["stylize", str(d), str(d / "s.png"), "-o", str(d), "--model", str(weights), "--quiet"]
    assert main(args) == 0
    made = sorted(p.name for p in d.iterdir())
    assert made == ["a.png", "a_stylized_s.png", "s.png", "s_stylized_s.png"]
    assert main(args) == 0                      # earlier outputs are not taken for inputs
    assert sorted(p.name for p in d.iterdir()) == made


def test_trailing_slash_makes_the_output_a_folder(tmp_path, weights):
    c, s = _img(tmp_path / "c.png", 16, 16), _img(tmp_path / "s.png", 16, 16, 1)
    assert main(["stylize", str(c), str(s), "-o", str(tmp_path / "new") + "/", "--model", str(weights)]) == 0
    assert (tmp_path / "new" / "c_stylized_s.png").exists()


@pytest.mark.parametrize("flag", [["--device", "foo"], ["--device", "meta"], ["--seed", str(2 ** 70)],
                                  ["--batch-size", "0"], ["--size", "-1"], ["--size", "4097"], ["--size", "1" + "0" * 400]])
def test_bad_flags_are_one_line_errors(tmp_path, weights, capsys, flag):
    c, s = _img(tmp_path / "c.png", 16, 16), _img(tmp_path / "s.png", 16, 16, 1)
    code = main(["stylize", str(c), str(s), "-o", str(tmp_path / "o.png"), "--model", str(weights)] + flag)
    err = capsys.readouterr().err
    assert code == 1 and flag[0] in err and len(err.strip().splitlines()) == 1


def test_a_strip_is_worked_small_and_a_size_too_large_is_a_clear_error(tmp_path, weights, capsys):
    cdir = tmp_path / "c"
    cdir.mkdir()
    _img(cdir / "strip.png", 20000, 1), _img(cdir / "ok.png", 16, 16, 1)
    s = _img(tmp_path / "s.png", 16, 16, 2)
    # the 20000 x 1 strip is worked at 8192 x 1 (16 rows once padded: 2 x 256² pixels), not 5,120,000 x 256
    code = main(["stylize", str(cdir), str(s), "-o", str(tmp_path / "o"), "--model", str(weights),
                 "--size", "256", "--quiet"])
    assert code == 0 and Image.open(tmp_path / "o" / "strip_stylized_s.png").size == (20000, 1)
    capsys.readouterr()
    # 4352 x 4096 is beyond the working-size limit: refused in one line, nothing written
    _img(tmp_path / "c.png", 17, 16)
    code = main(["stylize", str(tmp_path / "c.png"), str(s), "-o", str(tmp_path / "big.png"), "--model", str(weights),
                 "--size", "4096"])
    err = capsys.readouterr().err
    assert code == 1 and "c.png" in err and "too large" in err and "--size" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "big.png").exists()


def test_single_pair_output_is_replaced(tmp_path, weights):
    c1, c2 = _img(tmp_path / "c1.png", 20, 12), _img(tmp_path / "c2.png", 12, 20, 1)
    s = _img(tmp_path / "s.png", 16, 16, 2)
    out = tmp_path / "out.png"
    base = ["--model", str(weights), "--size", "16", "--quiet"]
    assert main(["stylize", str(c1), str(s), "-o", str(out), *base]) == 0
    assert main(["stylize", str(c2), str(s), "-o", str(out), *base]) == 0
    assert Image.open(out).size == (12, 20), "a single pair's output is always written"


def test_output_names_too_long_fail_only_their_pairs(tmp_path, weights, capsys):
    cdir, odir = tmp_path / "c", tmp_path / "o"
    cdir.mkdir(), odir.mkdir()
    _img(cdir / "a.png", 16, 16), _img(cdir / ("L" * 245 + ".png"), 16, 16, 1)   # its output name: 260 bytes
    s = _img(tmp_path / "s.png", 16, 16, 2)
    assert main(["stylize", str(cdir), str(s), "-o", str(odir), "--model", str(weights), "--size", "16"]) == 1
    err = capsys.readouterr().err
    assert "File name too long" in err and "Traceback" not in err
    assert [p.name for p in odir.iterdir()] == ["a_stylized_s.png"]


def test_output_names_at_the_length_limit_are_written(tmp_path, weights):
    cdir, odir = tmp_path / "c", tmp_path / "o"
    cdir.mkdir()
    _img(cdir / ("L" * 240 + ".png"), 16, 16)     # output name: 255 bytes, the longest allowed; temp names shorter
    s = _img(tmp_path / "s.png", 16, 16, 2)
    assert main(["stylize", str(cdir), str(s), "-o", str(odir), "--model", str(weights), "--size", "16"]) == 0
    assert [p.name for p in odir.iterdir()] == ["L" * 240 + "_stylized_s.png"]


def test_a_run_that_writes_nothing_leaves_no_new_folder(tmp_path, weights, capsys):
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    s = _img(tmp_path / "s.png", 16, 16)
    assert main(["stylize", str(bad), str(s), "-o", str(tmp_path / "new" / "deeper" / "out.png"),
                 "--model", str(weights)]) == 1
    assert "bad.png" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_unwritable_output_place_is_one_line_error_before_stylizing(tmp_path, weights, capsys, monkeypatch):
    import mambast.inference.stylizer
    c, s = _img(tmp_path / "c.png", 16, 16), _img(tmp_path / "s.png", 16, 16, 1)
    (tmp_path / "afile").write_text("x")
    monkeypatch.setattr(mambast.inference.stylizer.Stylizer, "run", lambda *a, **k: pytest.fail("stylized anyway"))
    code = main(["stylize", str(c), str(s), "-o", str(tmp_path / "afile" / "out.png"), "--model", str(weights)])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.count("\n") == 0 and "afile: exists and is not a folder" in err


def test_output_that_is_an_input_under_another_name_is_refused(tmp_path, weights, capsys):
    c, s = _img(tmp_path / "c.png", 16, 16), _img(tmp_path / "s.png", 16, 16, 1)
    (tmp_path / "link.png").hardlink_to(c)   # as PHOTO.png is photo.png on a case-insensitive file system
    before = c.read_bytes()
    assert main(["stylize", str(c), str(s), "-o", str(tmp_path / "link.png"), "--model", str(weights)]) == 1
    assert "refusing to write over an input image" in capsys.readouterr().err
    assert c.read_bytes() == before


def test_output_that_is_the_mask_is_refused(tmp_path, weights, capsys):
    c, s1, s2 = (_img(tmp_path / f"{n}.png", 16, 16, i) for i, n in enumerate(("c", "s1", "s2")))
    mask = Image.new("L", (16, 16), 0)
    mask.paste(255, (8, 0, 16, 16))   # two regions, one per style
    mask.save(tmp_path / "mask.png")
    before = (tmp_path / "mask.png").read_bytes()
    assert main(["stylize", str(c), str(s1), str(s2), "-o", str(tmp_path / "mask.png"), "--mask",
                 str(tmp_path / "mask.png"), "--model", str(weights)]) == 1
    assert "refusing to write over an input image" in capsys.readouterr().err
    assert (tmp_path / "mask.png").read_bytes() == before


def test_a_file_name_with_a_newline_is_printed_on_one_line(tmp_path, weights, capsys):
    cdir = tmp_path / "c"
    cdir.mkdir()
    (cdir / "bad\nname\x1b[31m.png").write_bytes(b"not an image")
    _img(cdir / "ok.png", 16, 16)
    code = main(["stylize", str(cdir), str(_img(tmp_path / "s.png", 16, 16, 1)), "-o", str(tmp_path / "o"),
                 "--model", str(weights), "--size", "16", "--quiet"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(lines) == 2 and "bad\\nname\\x1b[31m.png: not a recognised image" in lines[0]
    assert lines[1] == "1 stylized, 0 already present, 1 failed"


def test_cpu_out_of_memory_is_a_one_line_error_suggesting_smaller_sizes(tmp_path, weights, capsys, monkeypatch):
    from mambast.inference.stylizer import Stylizer as PairStylizer

    def run(self, jobs, *args, **kwargs):
        torch.empty(1 << 50, dtype=torch.uint8)   # what torch's CPU allocator raises when memory runs out
        yield from ()
    monkeypatch.setattr(PairStylizer, "run", run)
    c = _img(tmp_path / "c.png", 16, 16)
    code = main(["stylize", str(c), str(c), "-o", str(tmp_path / "o.png"), "--model", str(weights)])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "out of memory after 0 of 1 images" in err and "--batch-size" in err and "--size" in err


def test_a_size_that_cannot_fit_the_memory_available_is_refused(tmp_path, weights, capsys, monkeypatch):
    monkeypatch.setattr("mambast.inference.geometry.available_memory", lambda: 100_000_000)
    c = _img(tmp_path / "c.png", 16, 16)
    code = main(["stylize", str(c), str(c), "-o", str(tmp_path / "o.png"), "--model", str(weights), "--size", "512"])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1 and not (tmp_path / "o.png").exists()
    assert "needs about 0.4 GB of memory, 0.1 GB is available: use a smaller --size" in err
    assert main(["stylize", str(c), str(c), "-o", str(tmp_path / "o.png"), "--model", str(weights),
                 "--size", "64"]) == 0


@pytest.mark.parametrize("error, says", [
    (lambda: torch.empty(1 << 50, dtype=torch.uint8),
     "out of memory: try a smaller --batch-size, or a smaller --size (stylize) or --crop (train)"),
    (lambda: (_ for _ in ()).throw(OSError(28, "No space left on device", "/x/log.csv")),
     "/x/log.csv: No space left on device: free some space"),
    (lambda: (_ for _ in ()).throw(OSError(30, "Read-only file system", "ro/run")), "ro/run: Read-only file system"),
    (lambda: open("/", "wb"), "/: Is a directory"),
])
def test_commands_report_resources_running_out_and_unusable_paths_in_one_line(capsys, error, says):
    from mambast.cli import run_command
    assert run_command(lambda args: error(), None) == 1
    err = capsys.readouterr().err
    assert says in err and len(err.strip().splitlines()) == 1


TERMINATED_RUN = """
import sys, time
from pathlib import Path
from mambast.cli import run_command

def work(args):
    partial = Path(sys.argv[1]) / ".partial"
    partial.write_text("x")
    try:
        print("ready", flush=True)
        time.sleep(60)
    finally:
        partial.unlink()   # what a command's clean-up does on Ctrl-C

sys.exit(run_command(work, None))
"""


def test_sigterm_stops_a_command_as_ctrl_c_does(tmp_path):
    import signal
    repo = str(Path(__file__).resolve().parents[1])
    proc = subprocess.Popen([sys.executable, "-c", TERMINATED_RUN, str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": repo})
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 143 and err.strip() == "mambast: terminated", err
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_in_a_folder_run_says_how_many_outputs_were_written(tmp_path, weights, capsys, monkeypatch):
    from mambast.inference.stylizer import Stylizer
    (tmp_path / "c").mkdir()
    for i in range(4):
        _img(tmp_path / "c" / f"{i}.png", 16, 16, i)
    s = _img(tmp_path / "s.png", 16, 16, 9)
    calls, stylize_batch = [], Stylizer._stylize_batch

    def ctrl_c_at_the_third_batch(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return stylize_batch(self, *args, **kwargs)
    monkeypatch.setattr(Stylizer, "_stylize_batch", ctrl_c_at_the_third_batch)
    assert main(["stylize", str(tmp_path / "c"), str(s), "-o", str(tmp_path / "o"), "--model", str(weights),
                 "--size", "16", "--batch-size", "1", "--quiet"]) == 130
    assert capsys.readouterr().err == "mambast: interrupted after 2 of 4 outputs\n"
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["0_stylized_s.png", "1_stylized_s.png"]


def test_a_full_disk_stops_a_folder_run_in_one_line(tmp_path, weights, capsys, monkeypatch):
    import errno

    import mambast.atomic
    (tmp_path / "c").mkdir()
    for i in range(4):
        _img(tmp_path / "c" / f"{i}.png", 16, 16, i)
    s = _img(tmp_path / "s.png", 16, 16, 9)
    calls = []

    def full(path, write, suffix=""):
        calls.append(path)
        raise OSError(errno.ENOSPC, "No space left on device", str(path.parent / ".tmp"))
    monkeypatch.setattr(mambast.atomic, "atomic_write", full)
    assert main(["stylize", str(tmp_path / "c"), str(s), "-o", str(tmp_path / "o"), "--model", str(weights),
                 "--size", "16", "--batch-size", "1"]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mambast")]   # not the bar
    assert len(err) == 1 and "_stylized_s.png: No space left on device: free some space" in err[0], err
    assert calls


def test_other_errors_of_a_command_keep_their_traceback():
    from mambast.cli import run_command
    with pytest.raises(RuntimeError, match="a bug"):
        run_command(lambda args: (_ for _ in ()).throw(RuntimeError("a bug")), None)


# ------------------------------------------------------------------------------------------------ controls

def test_several_styles_are_mixed_for_one_content(tmp_path, weights):
    from mambast import stylize
    from mambast.io import load_image
    c, s1, s2 = (_img(tmp_path / f"{n}.png", w, h, i) for i, (n, w, h) in enumerate([("c", 24, 16), ("s1", 16, 16),
                                                                                        ("s2", 20, 20)]))
    base = ["--model", str(weights), "--size", "16", "--seed", "2"]
    assert main(["stylize", str(c), str(s1), str(s2), "-o", str(tmp_path / "mix.png"), "--weights", "0.7,0.3",
                 "--strength", "0.8", "--preserve-color", *base]) == 0
    ref = stylize(load_image(c), [load_image(s1), load_image(s2)], str(weights), weights=[0.7, 0.3], strength=0.8,
                  preserve_color=True, size=16, seed=2, device="cpu")
    got = np.asarray(Image.open(tmp_path / "mix.png")).astype(int)
    assert got.shape == (16, 24, 3) and np.abs(got - np.asarray(ref).astype(int)).max() <= 1
    # weights 1,0: the first style's output, exactly
    assert main(["stylize", str(c), str(s1), str(s2), "-o", str(tmp_path / "w10.png"), "--weights", "1,0", *base]) == 0
    assert main(["stylize", str(c), str(s1), "-o", str(tmp_path / "one.png"), *base]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "w10.png")), np.asarray(Image.open(tmp_path / "one.png")))


def test_a_content_folder_with_several_styles_and_a_mask(tmp_path, weights):
    cdir = tmp_path / "c"
    cdir.mkdir()
    for i in range(3):
        _img(cdir / f"c{i}.png", 32, 16, i)
    s1, s2 = _img(tmp_path / "s1.png", 16, 16, 5), _img(tmp_path / "s2.png", 16, 16, 6)
    mask = Image.new("L", (64, 32), 0)
    mask.paste(255, (32, 0, 64, 32))
    mask.save(tmp_path / "mask.png")
    out, m = str(tmp_path / "out"), str(tmp_path / "mask.png")
    assert main(["stylize", str(cdir), str(s1), str(s2), "-o", out, "--mask", m,
                 "--model", str(weights), "--size", "16", "--quiet", "--batch-size", "2"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [f"c{i}_stylized_s1+s2.png" for i in range(3)]


@pytest.mark.parametrize("flags, words", [
    (["--strength", "1.5"], "--strength must be in 0..1"),
    (["--weights", "0.5,0.3,0.2"], "--weights: 3 given for 2 styles"),
    (["--weights", "a,b"], "--weights must be a comma list of numbers"),
    (["--weights=-1,2"], "--weights must be >= 0"),
    (["--mask", "MASK3"], "--mask has 3 regions (grey levels 0, 128, 255) but 2 styles were given"),
    (["--mask", "MASK1"], ("mambast: error: --mask has 1 region (grey level 0) but 2 styles were given: give one "
                           "style per region, darkest first")),
    (["--mask", "WIDE"], "c.png: mask is 40 x 10, content is 24 x 16: the mask needs the content's aspect ratio"),
    (["--mask", "MASK3", "--weights", "1,1"], "not both"),
    (["--mask", "nothing.png"], "nothing.png: no such file"),
    (["--weights", "MODEL"], "the model is now chosen with --model"),
    (["--weights", "default"], "the model is now chosen with --model default"),
])
def test_bad_controls_are_one_line_errors_before_the_model_loads(tmp_path, weights, capsys, monkeypatch, flags, words):
    import mambast.inference.api as api
    monkeypatch.setattr(api, "load_model", lambda *a: pytest.fail("the model was loaded"))
    c, s1, s2 = _img(tmp_path / "c.png", 24, 16), _img(tmp_path / "s1.png", 16, 16, 1), _img(tmp_path / "s2.png", 8, 8)
    Image.fromarray(np.repeat(np.array([[0] * 8 + [128] * 8 + [255] * 8], np.uint8), 16, 0)).save(tmp_path / "m3.png")
    wide = Image.new("L", (40, 10))
    wide.paste(255, (20, 0, 40, 10))   # two regions, one per style
    wide.save(tmp_path / "wide.png")
    Image.new("L", (24, 16), 0).save(tmp_path / "m1.png")
    names = {"MASK3": str(tmp_path / "m3.png"), "WIDE": str(tmp_path / "wide.png"), "MODEL": str(weights),
             "MASK1": str(tmp_path / "m1.png"),
             "nothing.png": str(tmp_path / "nothing.png")}
    flags = [names.get(f, f) for f in flags]
    code = main(["stylize", str(c), str(s1), str(s2), "-o", str(tmp_path / "o.png"), *flags])
    err = capsys.readouterr().err
    assert code == 1 and words in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o.png").exists()


def test_several_styles_must_be_files(tmp_path, weights, capsys):
    c, s = _img(tmp_path / "c.png", 16, 16), _img(tmp_path / "s.png", 16, 16, 1)
    (tmp_path / "d").mkdir()
    out = str(tmp_path / "o.png")
    code = main(["stylize", str(c), str(s), str(tmp_path / "d"), "-o", out, "--model", str(weights)])
    assert code == 1
    assert "several styles for one content must be image files" in capsys.readouterr().err


def test_demo_says_which_file_it_wrote_into_an_output_folder(tmp_path, weights, capsys, monkeypatch):
    import mambast.examples
    c, s = _img(tmp_path / "c.png", 16, 16), _img(tmp_path / "s.png", 16, 16, 1)
    monkeypatch.setattr(mambast.examples, "example_pair", lambda cache: (c, s))
    (tmp_path / "out").mkdir()
    assert main(["demo", "-o", str(tmp_path / "out"), "--model", str(weights), "--size", "16"]) == 0
    assert f"wrote {tmp_path / 'out' / 'c_stylized_s.png'}" in capsys.readouterr().err.splitlines()
    assert (tmp_path / "out" / "c_stylized_s.png").is_file()


def test_weights_still_names_the_model_of_video_and_demo_with_a_warning(capsys):
    from mambast.cli import build_parser
    args = build_parser().parse_args(["video", "in.mp4", "s.png", "-o", "out.mp4", "--weights", "my-model/"])
    assert args.model == "my-model/" and "choose the model with --model" in capsys.readouterr().err
    assert build_parser().parse_args(["demo"]).model == "default"


@pytest.mark.parametrize("argv", [["stylize", "c.png", "s.png", "-o", "o.png", "--size", "abc"], ["stylize"],
                                  ["frobnicate"], ["eval", "--content", "c", "--style", "s", "--metrics", "ssim"],
                                  ["train", "--content", "c", "--style", "s", "--out", "o", "--steps", "many"]])
def test_usage_errors_are_one_line(capsys, argv):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.strip().splitlines()) == 1 and "error:" in err and "--help)" in err


@pytest.mark.parametrize("argv", [["video", "in.mp4", "s.png", "-o", "o.mp4", "extra"],
                                  ["stylize", "c.png", "s.png", "-o", "o.png", "--bogus"],
                                  ["train", "--content", "c", "--style", "s", "--out", "o", "extra"],
                                  ["weights", "fetch", "vgg19", "extra"]])
def test_unknown_arguments_point_to_the_subcommands_own_help(capsys, argv):
    with pytest.raises(SystemExit) as e:
        main(argv)
    prog = "mambast " + " ".join(argv[:2] if argv[0] == "weights" else argv[:1])
    assert e.value.code == 2
    assert capsys.readouterr().err == f"{prog}: error: unrecognized arguments: {argv[-1]} (see {prog} --help)\n"


@pytest.mark.parametrize("argv, says", [
    (["stylize", "c.png", "s.png", "-o", "o.png", "--batch-size", "0"], "--batch-size must be >= 1; got 0"),
    (["train", "--content", "c", "--style", "s", "--out", "o", "--batch-size", "0"], "--batch-size must be positive"),
    (["train", "--content", "c", "--style", "s", "--out", "o", "--lr", "nan"], "--lr must be a finite number >= 0"),
    (["eval", "--content", "c", "--style", "s", "--batch-size", "0"], "--batch-size must be >= 1; got 0"),
    (["video", "in.mp4", "s.png", "-o", "o.mp4", "--crf", "99"], "--crf must be in 0..63; got 99"),
])
def test_errors_of_settings_name_the_flag_not_the_field(tmp_path, capsys, monkeypatch, argv, says):
    if argv[0] == "video":
        pytest.importorskip("av")
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"mambast: error: {says}") and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []


def test_usage_errors_of_python_m_mambast_train_are_one_line(capsys):
    from mambast.train.cli import main as train_main
    with pytest.raises(SystemExit):
        train_main(["--steps", "many"])
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "invalid int value: 'many'" in err


def test_a_cache_folder_that_is_a_file_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    assert main(["weights", "fetch", "vgg19", "--cache", str(tmp_path / "afile")]) == 1
    err = capsys.readouterr().err
    assert "afile: cannot make the cache folder" in err and len(err.strip().splitlines()) == 1
