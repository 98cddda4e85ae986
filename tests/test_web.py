"""The web page's work without a browser: uploads refused with one-line messages naming the upload, the page's
result equal to `mambast.stylize`'s, progress from the model's stages, and Gradio kept out of the CLI's imports.
The page in a real browser is tests/test_web_browser.py."""

import socket
import subprocess
import sys
import types

import numpy as np
import pytest
from PIL import Image

import mambast
from mambast.errors import ImageError
from mambast.io import load_image
from mambast.web import MAX_UPLOAD_PIXELS, STAGES, STYLE_SLOTS, StylizePage, WebError, check_port, check_upload, \
    read_upload


def picture(path, w, h, seed=0, mode="RGB"):
    rng = np.random.default_rng(seed)
    img = Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).convert(mode)
    img.save(path)
    return path


def slots(*paths):
    """The page's style slots: the given files, then empty slots."""
    return list(paths) + [None] * (STYLE_SLOTS - len(paths))


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_import_and_help_do_not_load_gradio():
    r = run_python("import sys, contextlib, io, mambast, mambast.cli\n"
                   "with contextlib.redirect_stdout(io.StringIO()):\n"
                   "    for argv in (['--help'], ['serve', '--help']):\n"
                   "        try: mambast.cli.main(argv)\n"
                   "        except SystemExit: pass\n"
                   "print('gradio' in sys.modules, 'torch' in sys.modules)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "False"]


def serve_errors(monkeypatch, capsys, argv, gradio=None) -> list[str]:
    """What `mambast serve ARGV` prints on stderr, with `gradio` as the installed Gradio (None: missing)."""
    from mambast.cli import main
    monkeypatch.setitem(sys.modules, "gradio", gradio)   # None: what `import gradio` does when it is missing
    assert main(["serve", *argv]) == 1
    return capsys.readouterr().err.strip().splitlines()


def test_serve_without_gradio_or_with_an_old_one_is_a_one_line_error(monkeypatch, capsys):
    assert serve_errors(monkeypatch, capsys, ["--device", "cpu"]) == [
        "mambast: error: serve needs Gradio: pip install 'mambast[web]' (or pip install gradio)"]
    old = types.SimpleNamespace(__version__="5.49.1")
    assert serve_errors(monkeypatch, capsys, ["--device", "cpu"], old) == [
        "mambast: error: serve needs Gradio >= 6.17.3 and < 7, found 5.49.1: pip install 'mambast[web]'"]


@pytest.mark.parametrize("argv, message", [
    (["--device", "tpu"], "--device must be cpu, cuda or cuda:N"),
    (["--port", "70000"], "--port must be in 0..65535"),
])
def test_serve_refuses_bad_flags_before_anything(monkeypatch, capsys, argv, message):
    errors = serve_errors(monkeypatch, capsys, argv)   # refused before Gradio is even looked for
    assert len(errors) == 1 and message in errors[0]


def test_a_taken_port_is_refused_in_one_line():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(WebError, match=f"cannot serve on 127.0.0.1:{port}: .*pick another --port"):
            check_port("127.0.0.1", port)
    check_port("127.0.0.1", port)   # free again: no error
    with pytest.raises(WebError, match="--host no.such.host.invalid: unknown address"):
        check_port("no.such.host.invalid", port)


def test_bad_uploads_are_refused_naming_the_upload_not_the_server_path(tmp_path):
    (tmp_path / "notes.png").write_text("not an image")
    good = picture(tmp_path / "good.png", 40, 30)
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[:60])
    (tmp_path / "empty.jpg").write_bytes(b"")
    Image.new("1", (MAX_UPLOAD_PIXELS // 4000 + 1, 4000)).save(tmp_path / "huge.png")   # small file, many pixels
    cases = {"notes.png": "not a recognised image file", "cut.png": "cannot decode image",
             "empty.jpg": "empty file", "huge.png": f"too many pixels .*the page takes up to {MAX_UPLOAD_PIXELS:,}"}
    for name, reason in cases.items():
        with pytest.raises(ImageError, match=f"^style 2 \\({name}\\): (refused: )?{reason}") as e:
            read_upload(tmp_path / name, "style 2")
        assert str(tmp_path) not in str(e.value) and "\n" not in str(e.value)


def test_uploads_decode_as_the_command_line_does(tmp_path):
    rgba = picture(tmp_path / "a.png", 24, 16, mode="RGBA")
    assert np.array_equal(np.asarray(read_upload(rgba, "content")), np.asarray(load_image(rgba)))
    assert check_upload(rgba, "content") is None                    # a browser shows PNG as it is
    tiff = picture(tmp_path / "b.tif", 24, 16)
    preview = check_upload(tiff, "content")                         # it does not show TIFF: a decoded preview
    assert preview.size == (24, 16) and np.array_equal(np.asarray(preview), np.asarray(load_image(tiff)))


def test_the_page_gives_what_stylize_gives(tmp_path, tiny_model):
    content, style = picture(tmp_path / "c.png", 52, 36, seed=1), picture(tmp_path / "s.jpg", 40, 40, seed=2)
    page = StylizePage(tiny_model)
    seen = []
    out = page.stylize(content, slots(style), [1.0] * STYLE_SLOTS, seed=3, size=32,
                       progress=lambda f, d: seen.append((f, d)))
    want = mambast.stylize(Image.open(content), Image.open(style), tiny_model, seed=3, size=32)
    assert out.size == (52, 36) and np.array_equal(np.asarray(out), np.asarray(want))
    assert seen == [(0.0, "reading the images")] + [(f, d) for _, f, d in STAGES]   # every stage, in order


def test_the_page_refuses_before_any_model_work(tmp_path, tiny_model):
    content, style = picture(tmp_path / "c.png", 20, 20), picture(tmp_path / "s.png", 20, 20)
    (tmp_path / "bad.gif").write_text("GIF89a but no more")
    calls = []
    tiny_model.register_forward_pre_hook(lambda *_: calls.append(1))
    for m in tiny_model.children():
        m.register_forward_pre_hook(lambda *_: calls.append(1))
    page = StylizePage(tiny_model)
    cases = [((None, slots(style)), "add a content image"),
             ((content, slots()), "add at least one style image"),
             ((content, slots(style, None, tmp_path / "bad.gif")), r"style 3 \(bad.gif\): "),
             ((tmp_path / "bad.gif", slots(style)), r"content \(bad.gif\): ")]
    for (c, s), message in cases:
        with pytest.raises(ValueError, match=message):
            page.stylize(c, s, [1.0] * STYLE_SLOTS, size=32)
    with pytest.raises(ValueError, match="seed must be a whole number"):
        page.stylize(content, slots(style), [1.0] * STYLE_SLOTS, seed=1.5, size=32)
    with pytest.raises(ValueError, match="fill the style slots in order"):   # region 2 must not take slot 3
        page.stylize(content, slots(style, None, style), [1.0] * STYLE_SLOTS, mask=content, size=32)
    assert calls == []


@pytest.mark.parametrize("controls", ["strength", "mix", "mask", "margin"])
def test_the_page_hands_its_controls_to_stylize(tmp_path, tiny_model, controls):
    content = picture(tmp_path / "c.png", 48, 32, seed=1)
    s1, s2 = picture(tmp_path / "s1.png", 32, 32, seed=2), picture(tmp_path / "s2.png", 40, 24, seed=3)
    half = np.zeros((32, 48), np.uint8)
    half[:, 24:] = 255
    Image.fromarray(half).save(tmp_path / "mask.png")
    common = dict(seed=4, size=32)
    styles, weights, mask, settings, api = {
        "strength": ([s1], [1.0], None, dict(strength=0.4, preserve_color=True), {}),
        "mix": ([s2, None, s1], [0.7, 1.0, 0.3], None, {}, dict(weights=[0.7, 0.3])),
        # with a mask the sliders' weights are not used (stylize refuses weights and a mask together)
        "mask": ([s1, s2], [0.2, 0.9], tmp_path / "mask.png", {}, dict(mask=Image.open(tmp_path / "mask.png"))),
        "margin": ([s1], [1.0], None, dict(margin=16), {}),
    }[controls]
    out = StylizePage(tiny_model).stylize(content, slots(*styles), weights + [1.0] * (STYLE_SLOTS - len(weights)),
                                          mask, **settings, **common)
    want = mambast.stylize(Image.open(content), [Image.open(s) for s in styles if s is not None], tiny_model,
                           **api, **settings, **common)
    assert out.size == (48, 32) and np.array_equal(np.asarray(out), np.asarray(want))
    plain = mambast.stylize(Image.open(content), Image.open(styles[0]), tiny_model, **common)
    assert not np.array_equal(np.asarray(out), np.asarray(plain))   # the controls did something


def test_errors_the_page_shows_and_those_it_does_not():
    import errno
    from mambast.web import user_message
    assert user_message(ImageError("style 2 (a.png): empty file")) == "style 2 (a.png): empty file"
    assert user_message(ValueError("strength must be in 0..1\nmore")) == "strength must be in 0..1"
    assert user_message(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 GB")) \
        == "out of memory: try a smaller working size"
    assert "free some space" in user_message(OSError(errno.ENOSPC, "No space left on device", "/tmp/gradio/x.png"))
    assert user_message(RuntimeError("shape mismatch")) is None and user_message(KeyError("x")) is None


def test_building_the_page_writes_nothing_beside_the_package(tiny_model):
    pytest.importorskip("gradio")
    from pathlib import Path

    import mambast.web
    from mambast.web import build_page
    before = sorted(Path(mambast.web.__file__).parent.iterdir())
    build_page(StylizePage(tiny_model))   # (a Gradio component subclass would write web.pyi here)
    assert sorted(Path(mambast.web.__file__).parent.iterdir()) == before
    assert not Path(mambast.web.__file__).with_suffix(".pyi").exists()
