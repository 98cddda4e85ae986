"""Frames/s of `mambast.video.stylize_video` end to end on generated clips, and the flicker of its settings.

Usage: python benchmarks/video.py [--device cuda] [--size 512] [--cases 720p,1080p] [--frames 240]
                                  [--batch-sizes 8] [--compile off,on] [--presets medium,veryfast]
                                  [--strengths 1,0.5] [--preserve-color] [--commit SHA] [--out DIR]
       python benchmarks/video.py --stability [--device cpu] [--size 96] [--out DIR]
Speed (default): for each case a clip of --frames frames at 30 fps (a pan across a generated scene, H.264, with
an AAC track) is stylized with the bundled model (or --model) at --size through `stylize_video`, once per
batch size, compile setting, x264 preset and strength (the rest as `mambast video` runs: bf16, CUDA graphs where they pay;
H.264 at crf 18), each after
an untimed run on a short clip of the same resolution (compiling, graph captures, kernel choices). A record
holds the end-to-end frames/s, the settings, and the seconds each stage worked in that run (decode, stylize
timed on the GPU, encode: they overlap, so the one nearest the total limits), with decoding alone and encoding
alone (of the stylized frames) timed apart on the same clip. Cases are names (720p, 1080p) or WxH. Writes
video-<gpu>.json (video-cpu.json on the CPU): a header record {"header": {gpu, versions, commit, date, ...}},
then one record per case and setting. CPU smoke test:
    python benchmarks/video.py --device cpu --tiny --cases 96x64 --frames 6 --size 64 --out out/video
--stability: a panning clip (--pan pixels a frame) stylized frame by frame as the image path would (a fresh
permutation draw per frame), then with the clip's one draw and temporal smoothing off and on; records for
each the flicker (`mambast.video.flicker`), the motion-compensated change (output frame against the previous
one shifted by the pan, 0-255) and the mean departure from the unsmoothed frames (trails); writes
video-stability-<gpu>.json.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from common import device_slug, header, write_json  # noqa: E402  (benchmarks/common.py; puts the repo on sys.path)

from mambast.examples import stroke_painting  # noqa: E402
from mambast.inference import StylizeConfig, load_model  # noqa: E402
from mambast.io import load_image, pil_to_tensor  # noqa: E402
from mambast.video import flicker, stylize_video  # noqa: E402

CASES = {"720p": (1280, 720), "1080p": (1920, 1080)}
FPS = 30


def scene(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A photo-like picture: a smooth colour field with hard-edged shapes of several sizes and fine grain."""
    from PIL import Image, ImageDraw
    rng = np.random.default_rng(seed)
    field = Image.fromarray(rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
    draw = ImageDraw.Draw(field)
    for _ in range(60):
        x, y = rng.uniform(0, width), rng.uniform(0, height)
        r = rng.uniform(0.01, 0.12) * min(width, height)
        box = [x - r, y - r * rng.uniform(0.4, 1.6), x + r, y + r]
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    grain = rng.normal(0, 4, (height, width, 3))
    return np.clip(np.asarray(field, dtype=np.float64) + grain, 0, 255).astype(np.uint8)


def make_clip(path: Path, width: int, height: int, frames: int, pan: int = 4, codec: str = "libx264",
              audio: bool = True) -> np.ndarray:
    """A clip panning right `pan` pixels a frame across a generated scene; returns its frames [T, H, W, 3]."""
    import av
    big = scene(width + pan * frames, height)
    images = np.stack([big[:, pan * i:pan * i + width] for i in range(frames)])
    with av.open(str(path), "w") as out:
        v = out.add_stream(codec, rate=FPS, options={"crf": "0" if codec == "libx264rgb" else "18"})
        v.width, v.height, v.pix_fmt = width, height, "rgb24" if codec == "libx264rgb" else "yuv420p"
        a = None
        if audio:
            a = out.add_stream("aac", rate=48000)
            a.layout = "stereo"
        for img in images:
            out.mux(v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(v.encode(None))
        if a is not None:
            samples = 48000 * frames // FPS
            tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(samples) / 48000)).astype(np.float32)
            tone = np.stack([tone, tone])
            for k in range(0, samples, 1024):
                f = av.AudioFrame.from_ndarray(np.ascontiguousarray(tone[:, k:k + 1024]), format="fltp",
                                               layout="stereo")
                f.sample_rate, f.pts = 48000, k
                out.mux(a.encode(f))
            out.mux(a.encode(None))
    return images


def read_frames(path: Path, pixel_format: str = "rgb24") -> np.ndarray:
    import av
    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format=pixel_format) for f in c.decode(video=0)])


def parse_case(name: str) -> tuple[int, int]:
    if name in CASES:
        return CASES[name]
    w, h = name.lower().split("x")
    return int(w), int(h)


def load(args):
    """(model, resolved StylizeConfig of --device and --dtype) as `stylize_video` would load them; --tiny: a
    small random model (smoke tests)."""
    config = StylizeConfig(device=args.device, dtype=args.dtype).resolved()
    if not args.tiny:
        return load_model(args.model or "default", config), config
    from mambast.config import MambaSTConfig
    from mambast.model import MambaST
    torch.manual_seed(0)
    return MambaST(MambaSTConfig(dim=32, depth_encoder=1, depth_decoder=2, d_state=4,
                                 decoder_channels=[16, 8, 8])).eval().to(args.device), config


def encode_alone(planes: np.ndarray, path: Path, codec: str, preset: str) -> float:
    """Seconds to encode yuv420p `planes` [T, 3H/2, W] as `stylize_video` does (crf 18; it gets such planes from
    the model's device), no model, no threads."""
    import av
    t = time.perf_counter()
    with av.open(str(path), "w") as out:
        v = out.add_stream(codec, rate=FPS, options={"crf": "18", "preset": preset})
        v.width, v.height, v.pix_fmt = planes.shape[2], planes.shape[1] * 2 // 3, "yuv420p"
        for img in planes:
            out.mux(v.encode(av.VideoFrame.from_ndarray(img, format="yuv420p")))
        out.mux(v.encode(None))
    return time.perf_counter() - t


def speed(args, model, config, style: Path, folder: Path) -> list[dict]:
    settings = [{"batch_size": b, "compile": c == "on", "preset": p, "strength": a,
                 "preserve_color": args.preserve_color}
                for b in args.batch_sizes for c in args.compile for p in args.presets for a in args.strengths]
    records = []
    for case in args.cases.split(","):
        w, h = parse_case(case)
        clip, warm = folder / f"{case}.mp4", folder / f"{case}_warm.mp4"
        make_clip(clip, w, h, args.frames)
        make_clip(warm, w, h, 2 * max(args.batch_sizes) + 1)
        t = time.perf_counter()
        n_decoded = len(read_frames(clip))
        decode_alone = time.perf_counter() - t
        for extra in settings:
            run = dict(model=model, size=args.size, device=config.device, dtype=config.dtype, codec=args.codec,
                       progress=False, **extra)
            t = time.perf_counter()
            stylize_video(warm, style, folder / "warm_out.mp4", **run)
            warm_s = time.perf_counter() - t
            out = folder / f"{case}_out.mp4"
            summary = stylize_video(clip, style, out, **run)
            n = summary.frames
            assert n == n_decoded == args.frames, (n, n_decoded, args.frames)
            stages = summary.stages
            rec = {"case": case, "width": w, "height": h, "frames": n, "fps": n / summary.seconds,
                   "seconds": summary.seconds,
                   "settings": dict(vars(summary.config)) | {"codec": args.codec, "crf": 18, "preset": extra["preset"]},
                   "stage_seconds": stages, "stage_fps": {k: n / v for k, v in stages.items() if v > 0},
                   "limited_by": max(stages, key=stages.get),
                   "alone_fps": {"decode": n / decode_alone},
                   "warmup_seconds": warm_s, "warmup_frames": 2 * max(args.batch_sizes) + 1}
            print(f"{case:>8} {w}x{h} batch {extra['batch_size']:2d} compile {'on ' if extra['compile'] else 'off'} "
                  f"preset {extra['preset']} strength {extra['strength']:g}"
                  f"{' preserve-color' if args.preserve_color else ''}: "
                  f"{rec['fps']:7.1f} frames/s end to end; stages (frames/s while working): "
                  + ", ".join(f"{k} {v:.1f}" for k, v in rec["stage_fps"].items())
                  + f"; limited by {rec['limited_by']} (warm-up {warm_s:.1f} s)", flush=True)
            records.append(rec)
        stylized = read_frames(out, "yuv420p")   # the output decoded: what the encoder was given, up to its loss
        for preset in args.presets:
            encode_fps = n / encode_alone(stylized, folder / "encode_only.mp4", args.codec, preset)
            for rec in records:
                if rec["case"] == case and rec["settings"]["preset"] == preset:
                    rec["alone_fps"]["encode"] = encode_fps
            print(f"{case:>8} alone: decode {n / decode_alone:.1f}, encode ({preset}) {encode_fps:.1f} frames/s",
                  flush=True)
    return records


def compensated_change(frames: np.ndarray, pan: int) -> float:
    """Mean |frame t - frame t-1 moved by the pan| (0-255) over the part of the scene both show."""
    f = frames.astype(np.float64)
    width = f.shape[2]
    return float(np.abs(f[1:, :, :width - pan] - f[:-1, :, pan:]).mean())


def stability(args, model, config, style: Path, folder: Path) -> list[dict]:
    from mambast.inference.stylizer import stylize_tensor
    w, h = parse_case(args.cases.split(",")[0])
    clip = folder / "pan.mkv"
    src = make_clip(clip, w, h, args.frames, pan=args.pan, codec="libx264rgb", audio=False)
    assert np.array_equal(read_frames(clip), src)                     # lossless: the measure sees the model only
    style_t = pil_to_tensor(load_image(style))
    runs = {}
    with torch.inference_mode():    # what stylizing frame by frame as images gives: a fresh draw every frame
        per_frame = [stylize_tensor(model, torch.from_numpy(f).permute(2, 0, 1)[None].float().div(255), style_t,
                                    size=args.size, seed=None, autocast_dtype=config.torch_dtype) for f in src]
    runs["frame by frame (fresh permutations)"] = np.stack(
        [(y[0].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8) for y in per_frame])
    for s in args.smoothing:
        out = folder / f"pan_{s}.mkv"
        stylize_video(clip, style, out, model=model, size=args.size, batch_size=args.batch_sizes[0],
                      codec="libx264rgb", crf=0, dtype=config.dtype, smoothing=s, progress=False)
        runs[f"one draw, smoothing {s}"] = read_frames(out)
    plain = runs[f"one draw, smoothing {args.smoothing[0]}"].astype(np.float64)
    records = []
    for name, frames in runs.items():
        rec = {"run": name, "width": w, "height": h, "frames": len(frames), "pan": args.pan, "size": args.size,
               "flicker": flicker(src, frames), "compensated_change": compensated_change(frames, args.pan),
               "departure_from_unsmoothed": float(np.abs(frames - plain).mean())}
        print(f"{name:>38}: flicker {rec['flicker']:.3f}  compensated change {rec['compensated_change']:6.2f}  "
              f"departure {rec['departure_from_unsmoothed']:5.2f}", flush=True)
        records.append(rec)
    print(f"{'input':>38}: compensated change {compensated_change(src, args.pan):6.2f}")
    return records


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--model", default=None, help="a model (default: the bundled one)")
    ap.add_argument("--tiny", action="store_true", help="a small random model (smoke tests)")
    ap.add_argument("--dtype", default=None, help="float32, bfloat16 or float16 (default: bf16 on CUDA)")
    ap.add_argument("--size", type=int, default=None, help="working short side (default 512; 96 with --stability)")
    ap.add_argument("--batch-sizes", default="8", help="frames per model call, comma-separated (default 8)")
    ap.add_argument("--compile", default="off", help="off, on or off,on: runs without and with torch.compile")
    ap.add_argument("--cases", default=None, help="720p, 1080p or WxH, comma-separated (default 720p,1080p; "
                                                  "160x96 with --stability)")
    ap.add_argument("--frames", type=int, default=None, help="frames per clip (default 240; 24 with --stability)")
    ap.add_argument("--codec", default="libx264", help="libx264 or libx265 (the presets are theirs)")
    ap.add_argument("--presets", default="medium", help="x264/x265 presets, comma-separated (default medium)")
    ap.add_argument("--strengths", default="1", help="strengths, comma-separated (default 1; below 1 each frame "
                                                     "is also fused with itself)")
    ap.add_argument("--preserve-color", action="store_true", help="keep each frame's colours in every run")
    ap.add_argument("--stability", action="store_true", help="measure flicker instead of speed")
    ap.add_argument("--pan", type=int, default=3, help="pixels a frame the stability clip pans")
    ap.add_argument("--smoothing", type=float, nargs="+", default=[0.0, 0.3, 0.5, 0.7])
    ap.add_argument("--commit", default=None, help="git commit to record (default: git rev-parse HEAD)")
    ap.add_argument("--out", default="benchmarks/results", help="folder of the result file")
    args = ap.parse_args(argv)
    args.size = args.size or (96 if args.stability else 512)
    args.cases = args.cases or ("160x96" if args.stability else "720p,1080p")
    args.frames = args.frames or (24 if args.stability else 240)
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    args.strengths = [float(a) for a in args.strengths.split(",")]
    args.compile, args.presets = args.compile.split(","), args.presets.split(",")
    if not set(args.compile) <= {"off", "on"}:
        ap.error("--compile takes off, on or off,on")
    model, config = load(args)
    with tempfile.TemporaryDirectory() as tmp:
        style = Path(tmp) / "style.png"
        stroke_painting(512).save(style)
        measure = stability if args.stability else speed
        records = measure(args, model, config, style, Path(tmp))
    head = header(config.device, args.commit, size=args.size, dtype=config.dtype, codec=args.codec,
                  weights=args.model or ("tiny random" if args.tiny else "default"),
                  encoder_input="yuv420p from the model's device (even sizes)")
    name = f"video{'-stability' if args.stability else ''}-{device_slug(config.device)}.json"
    path = write_json(Path(args.out) / name, [{"header": head}] + records)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
