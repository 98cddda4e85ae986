"""Video stylization on tiny generated clips with an audio track: what the output keeps, still scenes, bad inputs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

av = pytest.importorskip("av")

from conftest import randomize, tiny_config  # noqa: E402
from mambast.errors import VideoError  # noqa: E402
from mambast.model import MambaST  # noqa: E402
from mambast.video import flicker, stylize_video  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
W, H, FPS, N = 64, 48, 8, 16


def make_clip(path: Path, n: int = N, still: bool = False, audio: bool = True, rotation: int = 0,
              video: bool = True, smooth: bool = False) -> Path:
    """A clip of n frames of W x H at FPS (a bar moving right, or a still picture), lossless H.264, with a
    sine tone of the same length in AAC; video=False: the audio alone; n=0: a video track without frames.
    The picture is noise, or with smooth=True mid-range colour ramps (whose chroma any luminance keeps in gamut)."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    if smooth:
        yy, xx = np.mgrid[0:H, 0:W]
        base = np.stack([80 + 80 * xx / W, 80 + 80 * yy / H, np.full((H, W), 110)], -1).astype(np.uint8)
    with av.open(str(path), "w") as out:
        if video:
            v = out.add_stream("libx264", rate=FPS, options={"crf": "0"})
            v.width, v.height, v.pix_fmt = W, H, "yuv444p"
            if rotation:
                v.set_display_rotation(rotation)
        if audio:
            a = out.add_stream("aac", rate=8000)
            a.layout = "mono"
        for i in range(n if video else 0):
            img = base.copy()
            if not still:
                img[:, (4 * i) % W:(4 * i) % W + 8] = 255
            out.mux(v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        if audio:
            t = np.arange(8000 * max(n, 4) // FPS) / 8000
            tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
            for k in range(0, tone.shape[1], 1024):
                f = av.AudioFrame.from_ndarray(np.ascontiguousarray(tone[:, k:k + 1024]), format="fltp", layout="mono")
                f.sample_rate, f.pts = 8000, k
                out.mux(a.encode(f))
            out.mux(a.encode(None))
        if video:
            out.mux(v.encode(None))
    return path


def read(path: Path) -> dict:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = list(c.decode(video=0))
        info = dict(rate=v.average_rate, width=v.codec_context.width, height=v.codec_context.height,
                    pts=[f.pts * f.time_base for f in frames], rotation=frames[0].rotation,
                    images=np.stack([f.to_ndarray(format="rgb24") for f in frames]))
    with av.open(str(path)) as c:
        info["audio"] = [bytes(p) for p in c.demux(audio=0) if p.dts is not None] if c.streams.audio else None
    return info


@pytest.fixture(scope="module")
def model() -> MambaST:
    torch.manual_seed(0)
    return randomize(MambaST(tiny_config()))


@pytest.fixture(scope="module")
def style(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("style") / "style.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(path)
    return path


def run(model, style, clip, out, **kw):
    return stylize_video(clip, style, out, model=model, **{"size": 32, "batch_size": 3, "progress": False, **kw})


def test_output_keeps_frame_count_rate_size_rotation_and_audio(tmp_path, model, style):
    clip = make_clip(tmp_path / "in.mp4", rotation=90)
    summary = run(model, style, clip, tmp_path / "out.mp4")
    src, out = read(clip), read(tmp_path / "out.mp4")
    assert summary.frames == len(out["images"]) == N and (summary.width, summary.height) == (W, H)
    assert out["rate"] == src["rate"] == FPS and out["pts"] == src["pts"]
    assert (out["width"], out["height"]) == (W, H) and out["rotation"] == src["rotation"] == 90
    assert out["audio"] == src["audio"] and len(out["audio"]) > 0        # packets copied byte for byte
    assert np.abs(out["images"].astype(int) - src["images"]).mean() > 10  # stylized, not copied
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4", "out.mp4"]
    with av.open(str(tmp_path / "out.mp4")) as c:      # tagged as converted, so players need not guess
        cc = c.streams.video[0].codec_context
        assert (cc.pix_fmt, cc.colorspace, cc.color_range) == ("yuv420p", 6, 1)
    assert summary.config.batch_size == 3 and set(summary.stages) == {"decode", "stylize", "encode"}
    assert all(0 < t < summary.seconds for t in summary.stages.values())


@pytest.mark.parametrize("controls", [{}, {"strength": 0.0}, {"strength": 0.5, "preserve_color": True},
                                      {"margin": 8}],
                         ids=["plain", "strength-0", "strength-0.5-colour", "margin"])
def test_frames_are_what_the_image_path_gives_each_frame(tmp_path, model, style, controls):
    """The clip path (batches, one style encoding, one permutation draw) against each decoded frame stylized
    alone as an image, with the same seed (whose permutations every image call draws afresh) and controls."""
    from mambast.inference import Stylizer
    from mambast.inference.geometry import to_uint8
    from mambast.io import load_image, pil_to_tensor
    clip = make_clip(tmp_path / "in.mp4", n=7 if not controls else 5, audio=False)
    run(model, style, clip, tmp_path / "out.mkv", codec="libx264rgb", crf=0, seed=5, **controls)   # lossless RGB
    got = read(tmp_path / "out.mkv")["images"]
    image_path = Stylizer(model, size=32, seed=5, batch_size=1, cuda_graphs=False, **controls)
    style_t = pil_to_tensor(load_image(style))
    for frame, out in zip(read(clip)["images"], got, strict=True):
        want = to_uint8(image_path.stylize(torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255, style_t))
        assert np.abs(out.astype(int) - want[0].permute(1, 2, 0).numpy()).max() <= 1


def test_settings_are_stylize_configs(tmp_path, model, style):
    from mambast.inference import StylizeConfig
    clip = make_clip(tmp_path / "in.mp4", n=4, audio=False)
    config = StylizeConfig(size=32, batch_size=2, seed=3, shuffle=False)
    summary = stylize_video(clip, style, tmp_path / "a.mp4", model=model, config=config, progress=False)
    assert (summary.config.size, summary.config.batch_size, summary.config.seed) == (32, 2, 3)
    assert not summary.config.shuffle and summary.config.device == "cpu" and summary.config.dtype == "float32"
    summary = stylize_video(clip, style, tmp_path / "b.mp4", model=model, config=config, batch_size=4, progress=False)
    assert summary.config.batch_size == 4 and summary.config.seed == 3    # a keyword overrides the config
    with pytest.raises(TypeError, match="crop"):
        stylize_video(clip, style, tmp_path / "c.mp4", model=model, crop=3)
    assert not (tmp_path / "c.mp4").exists()


def test_irregular_timestamps_and_an_odd_size_are_kept(tmp_path, model, style):
    from fractions import Fraction
    times = [0, 100, 150, 400, 410, 700]                         # milliseconds: a variable frame rate
    with av.open(str(tmp_path / "vfr.mkv"), "w") as out:
        v = out.add_stream("libx264", rate=10)
        v.width, v.height, v.pix_fmt = 63, 47, "yuv444p"
        v.codec_context.time_base = Fraction(1, 1000)
        for i, t in enumerate(times):
            frame = av.VideoFrame.from_ndarray(np.full((47, 63, 3), 40 * i, np.uint8), format="rgb24")
            frame.pts, frame.time_base = t, Fraction(1, 1000)
            out.mux(v.encode(frame))
        out.mux(v.encode(None))
    run(model, style, tmp_path / "vfr.mkv", tmp_path / "out.mp4")
    out = read(tmp_path / "out.mp4")
    assert out["pts"] == [Fraction(t, 1000) for t in times] and (out["width"], out["height"]) == (63, 47)
    run(model, style, tmp_path / "vfr.mkv", tmp_path / "out.mkv", codec="mpeg4")   # takes odd-sized yuv420p only
    assert len(read(tmp_path / "out.mkv")["images"]) == len(times)


def test_codec_and_container_are_selectable(tmp_path, model, style):
    clip = make_clip(tmp_path / "in.mp4", n=5)
    run(model, style, clip, tmp_path / "out.mkv", codec="mpeg4")
    with av.open(str(tmp_path / "out.mkv")) as c:
        assert c.streams.video[0].codec_context.name == "mpeg4"
        assert len(list(c.decode(video=0))) == 5
    sizes = {}
    for preset in ("ultrafast", "veryslow"):
        run(model, style, clip, tmp_path / f"{preset}.mp4", preset=preset)
        sizes[preset] = (tmp_path / f"{preset}.mp4").stat().st_size
        assert len(read(tmp_path / f"{preset}.mp4")["images"]) == 5
    assert sizes["ultrafast"] > sizes["veryslow"]     # the preset reached the encoder


@pytest.mark.parametrize("smoothing, controls",
                         [(0.0, {}), (0.5, {}), (0.5, {"strength": 0.5, "preserve_color": True})],
                         ids=["plain", "smoothing", "smoothing-strength-colour"])
def test_still_clip_gives_identical_frames(tmp_path, model, style, smoothing, controls):
    clip = make_clip(tmp_path / "still.mp4", still=True, audio=False)
    assert len(np.unique(read(clip)["images"], axis=0)) == 1
    run(model, style, clip, tmp_path / "out.mp4", crf=0, smoothing=smoothing, **controls)
    images = read(tmp_path / "out.mp4")["images"]
    assert len(images) == N and all(np.array_equal(images[0], im) for im in images)


def test_same_seed_same_output_and_smoothing_reduces_change(tmp_path, model, style):
    clip = make_clip(tmp_path / "in.mp4", audio=False)
    outs = {}
    for name, kw in (("a", {}), ("b", {}), ("smooth", {"smoothing": 0.8})):
        run(model, style, clip, tmp_path / f"{name}.mp4", crf=0, **kw)
        outs[name] = read(tmp_path / f"{name}.mp4")["images"]
    assert np.array_equal(outs["a"], outs["b"])
    src = read(clip)["images"]
    assert flicker(src, outs["smooth"]) < flicker(src, outs["a"])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("fast", [{"cuda_graphs": True}, {"compile": True, "cuda_graphs": False},
                                  {"cuda_graphs": True, "strength": 0.5, "preserve_color": True}],
                         ids=["cuda_graphs", "compile", "cuda_graphs-controls"])
def test_cuda_fast_paths_match_eager_and_keep_a_still_clip_still(tmp_path, model, style, fast, monkeypatch):
    """On CUDA with CUDA graphs (captured while the decoding and encoding threads use CUDA) or torch.compile: frame
    count, size and audio kept, the frames those of the eager path (float32, lossless out), a still clip's
    frames identical in the default bfloat16; with the controls too (both runs take them)."""
    import copy

    from mambast.inference import graphs
    captures = []
    capture = graphs.GraphCache._capture
    monkeypatch.setattr(graphs.GraphCache, "_capture", lambda self, t: captures.append(1) or capture(self, t))
    gpu_model = copy.deepcopy(model).cuda()
    clip = make_clip(tmp_path / "in.mp4")
    lossless = {"codec": "libx264rgb", "crf": 0, "dtype": "float32"}
    summary = run(gpu_model, style, clip, tmp_path / "fast.mkv", **lossless, **fast)
    assert summary.config.device.startswith("cuda") and summary.config.compile == fast.get("compile", False)
    controls = {k: v for k, v in fast.items() if k in ("strength", "preserve_color")}
    run(gpu_model, style, clip, tmp_path / "eager.mkv", **lossless, **controls, cuda_graphs=False)
    src, got, want = read(clip), read(tmp_path / "fast.mkv"), read(tmp_path / "eager.mkv")
    assert len(got["images"]) == N and (got["width"], got["height"]) == (W, H) and got["audio"] == src["audio"]
    assert np.abs(got["images"].astype(int) - want["images"]).max() <= 1
    assert bool(captures) == bool(fast.get("cuda_graphs"))   # 6 batches of one shape: captured, then replayed
    still = make_clip(tmp_path / "still.mp4", still=True, audio=False)
    run(gpu_model, style, still, tmp_path / "still_out.mp4", crf=0, **fast)
    images = read(tmp_path / "still_out.mp4")["images"]
    differ = {i: int(np.abs(im.astype(int) - images[0]).max()) for i, im in enumerate(images)
              if not np.array_equal(images[0], im)}
    assert len(images) == N and not differ, f"frames differing from frame 0 (largest change): {differ}"


def test_strength_one_is_the_plain_output_and_preserved_colours_are_each_frames(tmp_path, model, style):
    """strength 1 is today's stylization exactly; preserve_color gives every frame its own content frame's chroma
    (the measure of the image controls' tests), which the plain output does not keep."""
    from mambast.inference.controls import to_ycbcr
    clip = make_clip(tmp_path / "in.mp4", n=4, audio=False, smooth=True)
    lossless = {"codec": "libx264rgb", "crf": 0}
    outs = {}
    for name, kw in (("plain", {}), ("one", {"strength": 1.0}), ("colour", {"preserve_color": True})):
        run(model, style, clip, tmp_path / f"{name}.mkv", **lossless, **kw)
        outs[name] = read(tmp_path / f"{name}.mkv")["images"]
    assert np.array_equal(outs["plain"], outs["one"])
    chroma = lambda x: to_ycbcr(torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255)[:, 1:]  # noqa: E731
    src = chroma(read(clip)["images"])
    per_frame = (chroma(outs["colour"]) - src).abs().mean((1, 2, 3))
    assert len(per_frame) == 4 and per_frame.max() < 0.01 < (chroma(outs["plain"]) - src).abs().mean()


def test_flicker_is_the_ratio_of_frame_to_frame_changes():
    x = np.zeros((3, 2, 2))
    x[1], x[2] = 1, 2
    assert flicker(x, 2 * x) == 2 and flicker(x, np.zeros_like(x)) == 0
    with pytest.raises(ValueError):
        flicker(x[:1], x[:1])


def test_rgb_to_yuv420p_is_what_ffmpegs_scaler_makes_of_the_rgb_frame():
    """The conversion done where the frames are (the GPU) against FFmpeg's scaler through PyAV (the reference) on
    fresh smooth pictures: luma within a level, chroma within a few (the scaler's chroma filter is not a plain
    2 x 2 mean), the planes in PyAV's layout, and decoded back at least as close to the picture as the scaler's;
    odd sizes are refused."""
    import torch.nn.functional as F
    from mambast.video import rgb_to_yuv420p
    x = F.interpolate(torch.rand(2, 3, 6, 8), size=(H, W), mode="bilinear", align_corners=False)
    got = rgb_to_yuv420p(x)
    assert got.dtype == torch.uint8 and got.shape == (2, H * 3 // 2, W)
    for img, planes in zip((x * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).numpy(), got.numpy()):
        want = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p").to_ndarray()
        d = np.abs(planes.astype(int) - want.astype(int))
        assert d[:H].max() <= 1 and d[H:].mean() < 1 and d[H:].max() <= 8
        frame = av.VideoFrame.from_ndarray(planes, format="yuv420p")
        assert np.array_equal(frame.to_ndarray(), planes)
        back = [av.VideoFrame.from_ndarray(p, format="yuv420p").to_ndarray(format="rgb24") for p in (planes, want)]
        err = [np.abs(b.astype(int) - img.astype(int)).mean() for b in back]
        assert err[0] <= err[1] + 0.5
    with pytest.raises(ValueError, match="even"):
        rgb_to_yuv420p(x[:, :, :, 1:])


def _junk(tmp):
    (tmp / "bad.mp4").write_bytes(b"this is not a video " * 50)
    return tmp / "bad.mp4"


def _cut(tmp, ext):
    whole = make_clip(tmp / f"whole.{ext}").read_bytes()
    (tmp / f"whole.{ext}").unlink()
    (tmp / f"bad.{ext}").write_bytes(whole[:len(whole) * 2 // 3])
    return tmp / f"bad.{ext}"


def _resized(tmp):
    """Raw H.264 whose frames change size after three (two streams back to back)."""
    for name, (w, h) in (("a", (64, 48)), ("b", (32, 32))):
        with av.open(str(tmp / f"{name}.h264"), "w", format="h264") as out:
            v = out.add_stream("libx264", rate=FPS)
            v.width, v.height, v.pix_fmt = w, h, "yuv420p"
            for i in range(3):
                out.mux(v.encode(av.VideoFrame.from_ndarray(np.full((h, w, 3), 40 * i, np.uint8), format="rgb24")))
            out.mux(v.encode(None))
    (tmp / "bad.h264").write_bytes((tmp / "a.h264").read_bytes() + (tmp / "b.h264").read_bytes())
    for name in ("a", "b"):
        (tmp / f"{name}.h264").unlink()
    return tmp / "bad.h264"


BAD = {
    "not a video": (_junk, {}, "not a readable video"),
    "truncated mp4": (lambda t: _cut(t, "mp4"), {}, "not a readable video"),
    "truncated mkv": (lambda t: _cut(t, "mkv"), {}, "truncated"),
    "no video stream": (lambda t: make_clip(t / "bad.mkv", video=False), {}, "no video stream"),
    "zero-length": (lambda t: make_clip(t / "bad.mkv", n=0), {}, "no frames"),
    "empty file": (lambda t: (t / "bad.mp4").write_bytes(b"") or t / "bad.mp4", {}, "empty file"),
    "missing": (lambda t: t / "bad.mp4", {}, "no such file"),
    "frames change size": (_resized, {}, "frame 4 is 32x32, the first 64x48"),
    "compile on the CPU": (lambda t: make_clip(t / "bad.mp4", n=3), {"compile": True}, "compile is for CUDA"),
    "batch size 0": (lambda t: make_clip(t / "bad.mp4", n=3), {"batch_size": 0}, "batch_size must be"),
    "strength above 1": (lambda t: make_clip(t / "bad.mp4", n=3), {"strength": 1.5}, "strength must be in 0..1"),
    "strength not a number": (lambda t: make_clip(t / "bad.mp4", n=3), {"strength": "half"}, "strength must be"),
    "preset of a codec without": (lambda t: make_clip(t / "bad.mp4", n=3), {"codec": "mpeg4", "preset": "fast"},
                                  "no preset"),
    "unknown preset": (lambda t: make_clip(t / "bad.mp4", n=3), {"preset": "warp"}, "preset must be one of"),
    "unknown codec": (lambda t: make_clip(t / "bad.mp4", n=3), {"codec": "h265-turbo"}, "not a video encoder"),
    "audio codec": (lambda t: make_clip(t / "bad.mp4", n=3), {"codec": "aac"}, "is an audio encoder, not a video one"),
    "crf of a codec without": (lambda t: make_clip(t / "bad.mp4", n=3), {"codec": "mpeg4", "crf": 20}, "no crf"),
    "output without suffix": (lambda t: make_clip(t / "bad.mp4", n=3), {"out": "out"}, "suffix"),
    "output is a folder": (lambda t: (t / "out.mp4").mkdir() or make_clip(t / "bad.mp4", n=3), {}, "is a folder"),
    "unknown container": (lambda t: make_clip(t / "bad.mp4", n=3), {"out": "out.notavideo"}, "container"),
    "codec the container refuses": (lambda t: make_clip(t / "bad.mp4", n=3, audio=False), {"out": "out.webm"},
                                    "does not support 'libx264'"),
    "audio the container refuses": (lambda t: make_clip(t / "bad.mp4", n=3), {"out": "out.webm", "codec": "libvpx-vp9"},
                                    "cannot hold the input's aac audio"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_refused_in_one_line_without_output(tmp_path, model, style, case):
    make, kw, message = BAD[case]
    clip = make(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    out = tmp_path / kw.pop("out", "out.mp4")
    with pytest.raises(VideoError, match=message) as e:
        run(model, style, clip, out, **kw)
    assert "\n" not in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == before   # no output, no temporary file


def test_unreadable_style_is_an_image_error_without_output(tmp_path, model):
    from mambast.errors import ImageError
    clip = make_clip(tmp_path / "in.mp4", n=3)
    with pytest.raises(ImageError, match="no such file"):
        run(model, tmp_path / "missing.png", clip, tmp_path / "out.mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_interrupt_leaves_no_output(tmp_path, model, style, monkeypatch):
    import mambast.video as video
    clip = make_clip(tmp_path / "in.mp4")
    calls = []
    real = video._ClipStylizer.__call__

    def interrupted(self, frames):
        calls.append(len(frames))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, frames)
    monkeypatch.setattr(video._ClipStylizer, "__call__", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(model, style, clip, tmp_path / "out.mp4")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


SLOW_RUN = '''
import signal, sys, time, torch
# Ctrl-C raises KeyboardInterrupt, as in a terminal, even if the test runner passed SIGINT down ignored
print("SIGINT was", signal.getsignal(signal.SIGINT), file=sys.stderr)
signal.signal(signal.SIGINT, signal.default_int_handler)
sys.path.insert(0, sys.argv[4])
from conftest import randomize, tiny_config
import mambast.video as video
from mambast.model import MambaST
real = video._ClipStylizer.__call__
video._ClipStylizer.__call__ = lambda self, frames: (time.sleep(1.0), real(self, frames))[1]   # time to interrupt
torch.manual_seed(0)
video.stylize_video(sys.argv[1], sys.argv[2], sys.argv[3], model=randomize(MambaST(tiny_config())), size=32,
                    batch_size=1, progress=False)
'''


def test_ctrl_c_from_outside_leaves_no_output(tmp_path, style):
    import signal
    import time
    clip = make_clip(tmp_path / "in.mp4")
    proc = subprocess.Popen([sys.executable, "-c", SLOW_RUN, str(clip), str(style), str(tmp_path / "out.mp4"),
                             str(REPO / "tests")], env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    temp = lambda: [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]   # noqa: E731
    while not temp() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)                                           # until the temporary output exists
    time.sleep(0.5)                                                # into the frames (16 at 1 s each)
    assert temp() and proc.poll() is None, proc.communicate()[1]
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=20)[1]
    assert proc.returncode != 0 and "KeyboardInterrupt" in err, err[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_import_mambast_video_loads_neither_av_nor_torch():
    code = "import sys, mambast, mambast.video; print('av' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert out.stdout.split() == ["False", "False"], out.stderr


def test_the_video_command_writes_the_clip(tmp_path, model, style):
    """`mambast video` wires the flags to stylize_video (a tiny saved model, --size 32)."""
    from mambast.cli import main
    clip = make_clip(tmp_path / "in.mp4")
    model.save_pretrained(tmp_path / "tiny")
    out = tmp_path / "out.mp4"
    assert main(["video", str(clip), str(style), "-o", str(out), "--model", str(tmp_path / "tiny"),
                 "--size", "32", "--batch-size", "2", "--strength", "0.5", "--preserve-color", "--quiet"]) == 0
    got, want = read(out), read(clip)
    assert len(got["images"]) == len(want["images"]) and (got["width"], got["height"]) == (want["width"], want["height"])
    assert got["audio"] == want["audio"]
    for bad in (["--size", "-3"], ["--size", "0"], ["--strength", "2"]):
        assert main(["video", str(clip), str(style), "-o", str(tmp_path / "bad.mp4"), *bad]) == 1
        assert not (tmp_path / "bad.mp4").exists()
