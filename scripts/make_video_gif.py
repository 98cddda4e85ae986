"""Make docs/video.gif: a short before/after clip of `mambast video`, from the public-domain example photo.

Usage: python scripts/make_video_gif.py [--out docs/video.gif] [--seconds 2.5] [--fps 10] [--width 208]
                                        [--size 256] [--colors 64]
A slow pan and zoom over the example photo (from the scikit-image wheel on PyPI, fetched into the cache) is
written as an H.264 clip, stylized with the example stroke painting by the bundled default model on the CPU
(`mambast.video.stylize_video`, its default seed), and shown beside the original, frame by frame, as a looping
GIF with one shared palette (about 0.9 MB). Needs PyAV (pip install ".[video]"); under a minute on two CPU
cores.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def pan_and_zoom(photo, frames: int, width: int, height: int) -> list:
    """Frames of a camera moving right and in over `photo`: a window of the frame's aspect ratio going from
    95 % to 70 % of the photo's height while it moves from the left part of the photo to the right (sub-pixel,
    so smooth)."""
    from PIL import Image
    W, H = photo.size
    out = []
    for i in range(frames):
        t = i / max(1, frames - 1)
        t = t * t * (3 - 2 * t)                                # ease in and out
        h = H * (0.95 - 0.25 * t)
        w = h * width / height
        x, y = (W - w) * (0.1 + 0.8 * t), (H - h) * (0.5 - 0.3 * t)   # top left, the window inside the photo
        box = (x, y, x + w, y + h)
        out.append(photo.resize((width, height), Image.LANCZOS, box=box))
    return out


def write_clip(frames: list, path: Path, fps: int) -> None:
    """H.264 at quality crf 10 (nearly lossless: the stylization sees the frames, not coding artefacts)."""
    import av
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=fps, options={"crf": "10"})
        v.width, v.height, v.pix_fmt = frames[0].width, frames[0].height, "yuv420p"
        for im in frames:
            out.mux(v.encode(av.VideoFrame.from_image(im)))
        out.mux(v.encode(None))


def read_clip(path: Path) -> list:
    import av
    with av.open(str(path)) as c:
        return [f.to_image() for f in c.decode(video=0)]


def side_by_side(before: list, after: list, gap: int = 4) -> list:
    from PIL import Image
    w, h = before[0].size
    out = []
    for a, b in zip(before, after, strict=True):
        im = Image.new("RGB", (2 * w + gap, h), "white")
        im.paste(a, (0, 0))
        im.paste(b, (w + gap, 0))
        out.append(im)
    return out


def save_gif(frames: list, path: Path, fps: int, colors: int) -> None:
    """One palette for all frames (made from a few of them), no dithering: colours stay put from frame to frame
    (per-frame palettes and dither noise flicker) and the file stays small."""
    from PIL import Image
    w, h = frames[0].size
    picks = frames[:: max(1, len(frames) // 4)]
    sample = Image.new("RGB", (w, h * len(picks)))
    for i, im in enumerate(picks):
        sample.paste(im, (0, i * h))
    palette = sample.quantize(colors=colors, method=Image.Quantize.MEDIANCUT)
    indexed = [im.quantize(palette=palette, dither=Image.Dither.NONE) for im in frames]
    path.parent.mkdir(parents=True, exist_ok=True)
    indexed[0].save(path, save_all=True, append_images=indexed[1:], duration=round(1000 / fps), loop=0,
                    optimize=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("docs/video.gif"))
    ap.add_argument("--seconds", type=float, default=2.5)
    ap.add_argument("--fps", type=int, default=10)
    ap.add_argument("--width", type=int, default=208, help="width of each side (height: 2/3 of it)")
    ap.add_argument("--colors", type=int, default=64, help="GIF palette size")
    ap.add_argument("--size", type=int, default=256,
                    help="working short side (larger than the frames: finer strokes once resized back)")
    args = ap.parse_args(argv)

    from mambast.examples import example_pair
    from mambast.io import load_image
    from mambast.video import stylize_video

    content, style = example_pair()
    width, height = args.width, round(args.width * 2 / 3) // 2 * 2
    frames = pan_and_zoom(load_image(content), round(args.seconds * args.fps), width, height)
    with tempfile.TemporaryDirectory() as tmp:
        clip, styled = Path(tmp) / "pan.mp4", Path(tmp) / "pan-styled.mp4"
        write_clip(frames, clip, args.fps)
        summary = stylize_video(clip, style, styled, size=args.size, device="cpu", crf=10)
        before, after = read_clip(clip), read_clip(styled)
    save_gif(side_by_side(before, after), args.out, args.fps, args.colors)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB, {len(after)} frames of "
          f"{2 * width + 4}x{height}; stylized in {summary.seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
