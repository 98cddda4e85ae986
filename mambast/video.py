"""Stylize a video clip with one style image: decode (PyAV), stylize frames in batches, encode, copy the audio.

Frames go through the image path's `mambast.inference.Stylizer` (its content encoder, fusion and CNN decoder, with
its precision, CUDA graphs and torch.compile; settings are `StylizeConfig`'s), with one encoding of the style and
one draw of the style permutations for the whole clip, so a still scene gives identical frames; the controls
strength and preserve_color are the image path's, per frame. Decoding, stylizing and encoding run in three
threads; the output appears only once complete. PyAV and torch load on first call.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import queue
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from .errors import VideoError, one_line

# Video-only settings (the model's are StylizeConfig's): encoder quality, temporal smoothing, and the seed of a
# clip's one permutation draw where none is given (a clip is reproducible unless asked otherwise).
DEFAULT_CRF = 18                  # visually near-lossless for x264/x265; lower is better, 0 lossless
# Weight of the previous frame's smoothed content tokens (0: off). Measured on a panning clip (docs/video.md):
# smoothing lowers frame-to-frame change only by trailing the motion, so it stays off unless asked for.
DEFAULT_SMOOTHING = 0.0
DEFAULT_SEED = 0
# x264's and x265's speed/size trade-offs, fastest first (None: the encoder's default, medium)
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
_END = object()                   # end of a queue's stream


@dataclass(frozen=True)
class VideoSummary:
    """What `stylize_video` wrote."""
    output: Path
    frames: int
    width: int
    height: int
    frame_rate: Fraction | None
    audio: bool
    seconds: float                # wall-clock time of the whole call
    # seconds each stage worked ("decode": demuxing, decoding, converting to RGB; "stylize": the model and, for
    # yuv420p, the conversion to YUV, timed on the GPU on CUDA; "encode": encoding (from RGB: converting too),
    # muxing): they overlap, so the one nearest `seconds` limits
    stages: dict = field(default_factory=dict)
    config: object = None         # the StylizeConfig it ran with (resolved: device, dtype, batch size, graphs)


def _import_av():
    try:
        import av
    except ImportError:
        raise VideoError("video needs PyAV: pip install 'mambast[video]' (or pip install av)") from None
    return av


# ------------------------------------------------------------------------------------------- the measure

def flicker(inputs, outputs) -> float:
    """Mean absolute frame-to-frame change of `outputs` divided by that of `inputs` ([T, ...] arrays or tensors,
    same value range): 1 means the output changes as much as the input does; above 1 the stylization adds
    change of its own (flicker), below 1 it holds back change (on a moving scene: trails)."""
    import numpy as np
    x, y = np.asarray(inputs, dtype=np.float64), np.asarray(outputs, dtype=np.float64)
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(f"flicker needs two equally long clips of at least 2 frames; got {len(x)} and {len(y)}")
    dx, dy = np.abs(np.diff(x, axis=0)).mean(), np.abs(np.diff(y, axis=0)).mean()
    return float(dy / dx) if dx > 0 else (0.0 if dy == 0 else float("inf"))


# ------------------------------------------------------------------------------------------- checks

def _open_input(av, path: Path):
    """(container, video stream, audio stream or None) of a readable clip; VideoError otherwise."""
    from .io import check_input_file
    check_input_file(path, "video", VideoError)
    try:
        container = av.open(str(path))
    except av.FFmpegError as e:
        raise VideoError(f"{path}: not a readable video ({one_line(e)})") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path}: has no video stream")
    video = container.streams.video[0]
    video.thread_type = "AUTO"   # frame threads: decoding keeps pace with a GPU
    audio = container.streams.audio[0] if container.streams.audio else None
    return container, video, audio


def _encoder_options(av, codec: str, crf: int | None, preset: str | None = None) -> tuple[str, dict]:
    """(codec name, encoder options) of a video encoder name; VideoError for names FFmpeg cannot encode video with."""
    try:
        found = av.codec.Codec(codec, "w")
    except Exception:   # PyAV raises UnknownCodecError (a ValueError) or, in older versions, other types
        raise VideoError(f"codec {codec!r} is not a video encoder of this FFmpeg (try libx264, libx265, "
                         f"libvpx-vp9, mpeg4)") from None
    if found.type != "video":
        raise VideoError(f"codec {codec!r} is {'an' if found.type[:1] in 'aeiou' else 'a'} {found.type} encoder, "
                         "not a video one")
    extra = {"x265-params": "log-level=error"} if found.name == "libx265" else {}   # x265 prints a page otherwise
    with_crf = found.name in ("libx264", "libx264rgb", "libx265", "libvpx", "libvpx-vp9", "libaom-av1", "libsvtav1")
    if crf is not None and not with_crf:
        raise VideoError(f"codec {codec!r} has no crf quality setting (leave the crf out)")
    if crf is not None and not 0 <= crf <= 63:
        raise VideoError(f"crf must be in 0..63; got {crf}")
    if preset is not None and found.name not in ("libx264", "libx264rgb", "libx265"):
        raise VideoError(f"codec {codec!r} has no preset setting (leave the preset out)")
    if preset is not None and preset not in PRESETS:
        raise VideoError(f"preset must be one of {', '.join(PRESETS)}; got {preset!r}")
    extra |= {"preset": preset} if preset is not None else {}
    return found.name, ({"crf": str(DEFAULT_CRF if crf is None else crf)} if with_crf else {}) | extra


def _pixel_format(av, codec: str, width: int, height: int) -> str:
    """yuv420p where the encoder takes it and the size is even (what players expect), else a full-chroma one."""
    formats = [f.name for f in (av.codec.Codec(codec, "w").video_formats or ())]
    even = width % 2 == 0 and height % 2 == 0
    for name in (["yuv420p"] if even else []) + ["yuv444p", "rgb24", "yuv420p"]:
        if not formats or name in formats:
            return name
    return formats[0]


_BT601, _LIMITED_RANGE = 6, 1   # FFmpeg's AVCOL_SPC_SMPTE170M and AVCOL_RANGE_MPEG


def rgb_to_yuv420p(rgb):
    """[B, 3, H, W] float RGB in [0, 1] (H, W even) -> [B, 3H/2, W] uint8 YUV 4:2:0 planes, laid out as PyAV's
    `VideoFrame.from_ndarray(..., format="yuv420p")` takes them, with the matrix and range FFmpeg's scaler uses
    by default (BT.601, limited range) and each chroma sample the mean of its 2 x 2 block (the scaler's filter
    differs on sharp colour edges). Computed where the frames are, so that on a GPU the encoding thread gets half
    the bytes and no conversion of its own."""
    import torch
    import torch.nn.functional as F
    b, _, h, w = rgb.shape
    if h % 2 or w % 2:
        raise ValueError(f"YUV 4:2:0 needs an even width and height; got {w}x{h}")
    rgb = rgb.float().clamp(0, 1)   # as the rgb24 frame would hold it; 16-bit floats would lose levels
    r, g, bl = rgb.unbind(1)
    y = 16 + 219 * (0.299 * r + 0.587 * g + 0.114 * bl)
    r, g, bl = F.avg_pool2d(rgb, 2).unbind(1)
    u = 128 + 224 * (-0.168736 * r - 0.331264 * g + 0.5 * bl)
    v = 128 + 224 * (0.5 * r - 0.418688 * g - 0.081312 * bl)
    planes = torch.cat([p.reshape(b, -1) for p in (y, u, v)], dim=1)
    return planes.round_().to(torch.uint8).reshape(b, h * 3 // 2, w)   # within 16..240 from inputs in [0, 1]


# ------------------------------------------------------------------------------------------- the stages

class _Frames:
    """Decoded frames of a clip as (rgb [H, W, 3] uint8, pts); audio packets go to `audio` as they are demuxed.

    Raises VideoError where the file turns out to be corrupt or shorter than its header says."""

    def __init__(self, av, path: Path, container, video, audio):
        self.av, self.path, self.container, self.video, self.audio_stream = av, path, container, video, audio
        self.audio: queue.SimpleQueue = queue.SimpleQueue()
        self.count, self.rotation = 0, 0   # rotation: counter-clockwise degrees of the display matrix
        self.size = None                   # (width, height) of the first frame, which every frame must have
        self._iter = self._decode()

    def __iter__(self):
        return self._iter

    def close(self) -> None:
        """End decoding early (once no thread is decoding): the log capture ends with it."""
        try:
            self._iter.close()
        except ValueError:   # still running in a thread that did not stop; it ends with the container
            pass

    def _decode(self):
        streams = [self.video] + ([self.audio_stream] if self.audio_stream is not None else [])
        fmt = self.container.format.name
        # FFmpeg reports a file cut short only in its log (the demuxer then just ends); all threads' messages are
        # captured, as the first frame is decoded in the caller's thread and the rest in the decoding thread
        with self.av.logging.Capture(local=False) as logs:
            try:
                for packet in self.container.demux(*streams):
                    if packet.stream is self.audio_stream:
                        if packet.dts is not None:   # the demuxer's empty flush packet is not data
                            self.audio.put(packet)
                        continue
                    for frame in packet.decode():
                        if self.count == 0:
                            self.rotation = int(round(getattr(frame, "rotation", 0) or 0))
                            self.size = (frame.width, frame.height)
                        elif (frame.width, frame.height) != self.size:
                            raise VideoError(f"{self.path}: frame {self.count + 1} is {frame.width}x{frame.height}, "
                                             f"the first {self.size[0]}x{self.size[1]}: clips that change size "
                                             f"are not supported")
                        self.count += 1
                        yield frame.to_ndarray(format="rgb24"), frame.pts
            except self.av.FFmpegError as e:
                raise VideoError(f"{self.path}: corrupt or truncated at frame {self.count + 1} ({one_line(e)})") \
                    from None
        cut = [m for level, name, m in logs if name == fmt and level <= self.av.logging.ERROR]
        if cut or (self.video.frames and self.count < self.video.frames):
            why = one_line(cut[0]) if cut else f"{self.count} of {self.video.frames} frames decoded"
            raise VideoError(f"{self.path}: truncated or corrupt ({why})")


class _ClipStylizer:
    """Batches of frames -> stylized frames through the pieces of one `Stylizer` (its content encoder, fusion and
    CNN decoder, so its precision, CUDA graphs and torch.compile), with one style's tokens and permutations for
    every frame, and the content tokens optionally smoothed over time (exponential moving average). The
    stylizer's strength and preserve_color are its controls (`mambast.inference.controls`), applied per frame:
    below strength 1 each frame is also encoded as a style and fused with itself (the identity path)."""

    def __init__(self, stylizer, style, frame_hw: tuple[int, int], seed, smoothing: float):
        import torch
        from .inference.controls import recipe
        from .inference.geometry import check_working_size, prepare_style, working_size
        self.stylizer, self.frame_hw, self.smoothing = stylizer, frame_hw, smoothing
        self.pixel_format = "rgb24"   # of the frames it returns; "yuv420p" when the encoder takes that
        self.recipe = recipe(1, stylizer.strength)          # the style (index 0) and/or the identity path
        self.device, self.patch = stylizer.param.device, stylizer.model.config.patch_size
        self.cuda, self.batch_size = self.device.type == "cuda", stylizer.batch_size
        self.working, self.margin = working_size(*frame_hw, stylizer.size, self.patch), stylizer.margin
        try:
            check_working_size(*self.working, self.device, self.margin)
        except ValueError as e:
            raise VideoError(str(e)) from None
        with torch.inference_mode():
            s = prepare_style(style.to(self.device, torch.float32), self.working, self.patch, self.margin)
            self.style_tokens = stylizer.encode_style(s)                                   # [1, H', W', C]
            self.perms = stylizer.permutations(self.style_tokens, seed)                    # one draw per clip
        self.previous = None                                                               # smoothed tokens
        self._styles: dict = {}                                                            # batch -> tokens

    def _style_batch(self, n: int):
        """The style tokens repeated for n frames, made once per batch size: contiguous, as the image path's, so
        that compiled code and graph captures see one memory layout."""
        if n not in self._styles:
            self._styles[n] = self.style_tokens.expand(n, -1, -1, -1).contiguous()
        return self._styles[n]

    def stack(self, frames: list):
        """[B, H, W, 3] uint8 of decoded frames (rgb arrays); on CUDA in page-locked memory (its copy to the GPU
        then overlaps other work) and padded to the full batch by repeating the last frame, so that every call has
        one shape: the clip's tail needs no compile, graph capture or kernel choice of its own."""
        import torch
        n = self.batch_size if self.cuda else len(frames)
        out = torch.empty((n, *self.frame_hw, 3), dtype=torch.uint8, pin_memory=self.cuda)
        for i in range(n):
            out[i] = torch.from_numpy(frames[min(i, len(frames) - 1)])
        return out

    def _smooth(self, tokens):
        """EMA along the batch and across calls; written as x + a (prev - x) so that equal tokens stay bit-equal."""
        if not self.smoothing:
            return tokens
        out = tokens.clone()
        for i in range(len(out)):
            if self.previous is not None:
                out[i] += self.smoothing * (self.previous - out[i])
            self.previous = out[i]
        return out

    def __call__(self, frames):
        """frames [B, H, W, 3] uint8 (from `stack`) -> (stylized frames on the CPU, ready), as uint8 [B, H, W, 3]
        rgb24 or [B, 3H/2, W] yuv420p planes (`pixel_format`): ready()
        waits until they are there and returns the seconds the model took. On CUDA the work is only queued (and
        timed on the GPU), so that this thread prepares the next batch while the GPU works."""
        import torch
        from .inference.controls import IDENTITY, preserve_colors
        from .inference.geometry import add_margin, finish_output, pad_to_multiple, resize, to_uint8
        stream = torch.cuda.current_stream(self.device) if self.cuda else None
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record(stream)
        started = time.perf_counter()
        with torch.inference_mode():
            x = frames.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)   # [B, 3, H, W]
            c = pad_to_multiple(add_margin(resize(x, self.working), self.margin), self.patch)[0]
            tokens = self._smooth(self.stylizer.encode_content(c))                                # [B, H', W', C]
            if self.recipe.styles == [0]:     # full strength: the plain fusion with the clip's style batch
                y = self.stylizer.fuse(tokens, self._style_batch(len(tokens)), self.perms)
            else:                             # each frame's identity path too: the frame as its own style
                identity = self.stylizer.encode_style(c)                                # [B, H', W', C]
                grids = [{0: self.style_tokens, IDENTITY: identity[i:i + 1]} for i in range(len(tokens))]
                y = self.stylizer.fuse_recipes(tokens, grids, [self.recipe] * len(tokens), self.perms)
            y = finish_output(y, self.working, self.frame_hw, self.margin)
            if self.stylizer.preserve_color:  # each frame's own colours
                y = preserve_colors(y, x)
            if self.pixel_format == "yuv420p":
                y = rgb_to_yuv420p(y)
            else:
                y = to_uint8(y).permute(0, 2, 3, 1).contiguous()
            if not self.cuda:
                seconds = time.perf_counter() - started
                return y, lambda: seconds
            out = torch.empty(y.shape, dtype=torch.uint8, pin_memory=True)
            out.copy_(y, non_blocking=True)
        end.record(stream)

        def ready() -> float:
            end.synchronize()
            return start.elapsed_time(end) / 1000
        return out, ready


class _Clock:
    """Seconds each named stage spends working (`with clock("decode"): ...`), from any thread."""

    def __init__(self):
        self.seconds: collections.Counter = collections.Counter()

    @contextlib.contextmanager
    def __call__(self, stage: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - started


def _put(q: queue.Queue, item, stop: threading.Event) -> bool:
    """Put unless `stop` is set first (a bounded queue whose reader has gone must not block forever)."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _get(q: queue.Queue, stop: threading.Event):
    while not stop.is_set():
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            continue
    return _END


class _Worker(threading.Thread):
    """A daemon thread whose exception is kept for the main thread; it sets `stop` when it fails."""

    def __init__(self, target, stop: threading.Event, name: str):
        super().__init__(name=name, daemon=True)
        self._target_fn, self.stop, self.error = target, stop, None

    def run(self):
        try:
            self._target_fn()
        except BaseException as e:   # handed to the main thread, which raises it
            self.error = e
            self.stop.set()


# ------------------------------------------------------------------------------------------- the entry point

def stylize_video(input, style, output, *, model=None, config=None, codec: str = "libx264", crf: int | None = None,
                  preset: str | None = None, smoothing: float = DEFAULT_SMOOTHING, progress: bool = True,
                  **settings) -> VideoSummary:
    """Stylize every frame of the clip `input` with the image `style` and write the clip `output`.

    The output keeps the input's resolution, frame timestamps (so frame rate and count), rotation tag and
    first audio stream (its packets copied, not re-encoded); its container comes from the suffix (.mp4,
    .mkv, ...). model: a MambaST, a weights path, or None for the bundled model (paths and the default are
    loaded once per device and dtype and kept, as by `mambast.stylize`).

    How the model runs is a `StylizeConfig` (config, default StylizeConfig(seed=DEFAULT_SEED)) with `settings`
    (any of its fields) overriding it, as for images: size (the working short side; 0 is refused), seed (draws
    the style permutations, once for the clip), shuffle, dtype, batch_size (frames per model call), compile,
    cuda_graphs, device, and the controls strength (per frame, against that frame's identity path: below 1 each
    frame is also encoded as a style and fused with itself, see docs/video.md) and preserve_color (each frame
    keeps its own colours). Video-only: codec (an FFmpeg video encoder); crf (its quality for x264/x265/VP9/AV1,
    lower is better; None: 18); preset (x264/x265's speed, one of PRESETS; None: medium); smoothing in [0, 1), the weight of the previous frame's content tokens
    (exponential moving average; 0 is off, see docs/video.md); progress (a bar with frames/s and ETA).

    The output is written to a temporary file beside it and renamed at the end: an error or Ctrl-C leaves no
    output. Bad inputs and settings raise `mambast.errors.VideoError` (one line), an unreadable style image
    `ImageError`, a keyword that is not a StylizeConfig field `TypeError`.
    """
    av = _import_av()
    from .inference.api import image_tensor, merged_config, model_and_config, resolved_for
    from .inference.config import StylizeConfig
    from .inference.stylizer import Stylizer
    input, output = Path(input), Path(output)
    config = merged_config(config if config is not None else StylizeConfig(seed=DEFAULT_SEED), settings,
                           "stylize_video")
    if not isinstance(config.size, int) or config.size < 1:
        raise VideoError(f"size must be an int >= 1 (a working size; 0, the frames' own size, is not for video); "
                         f"got {config.size!r}")
    if config.batch_size is not None and (not isinstance(config.batch_size, int) or config.batch_size < 1):
        raise VideoError(f"batch_size must be an int >= 1; got {config.batch_size!r}")
    try:
        config = resolved_for(model, config)   # device, dtype, compile: refused before any work
    except ValueError as e:
        raise VideoError(one_line(e)) from None
    if not 0 <= smoothing < 1:
        raise VideoError(f"smoothing must be in [0, 1); got {smoothing!r}")
    if not output.suffix:
        raise VideoError(f"{output}: give the output a suffix naming its container (.mp4, .mkv, .mov, ...)")
    if output.resolve() == input.resolve():
        raise VideoError(f"{output}: the output would replace the input")
    if output.is_dir():   # found before the frames are stylized, not when the finished file is moved there
        raise VideoError(f"{output}: is a folder; give the output file's name")
    codec, options = _encoder_options(av, codec, crf, preset)
    started = time.perf_counter()
    container, video, audio = _open_input(av, input)
    frames = _Frames(av, input, container, video, audio)
    restore_level = av.logging.get_level()
    if restore_level is None or restore_level < av.logging.ERROR:
        av.logging.set_level(av.logging.ERROR)   # route FFmpeg's errors to PyAV, where they are captured
    try:
        try:
            first = next(iter(frames))
        except StopIteration:
            raise VideoError(f"{input}: has no frames (zero-length clip)") from None
        style_img = image_tensor(style, "style")
        model, config = model_and_config(model, config)
        height, width = first[0].shape[:2]
        stylizer = _ClipStylizer(Stylizer.from_config(model, config, workers=1, cache_bytes=0), style_img,
                                 (height, width), config.seed, smoothing)
        clock = _Clock()
        from .atomic import atomic_write

        def write(tmp: str) -> None:
            _transcode(av, tmp, first, frames, stylizer, video, audio, codec, options, progress, output, clock)
        try:
            atomic_write(output, write, suffix=output.suffix)
        except av.FFmpegError as e:
            raise VideoError(f"{output}: cannot write video ({one_line(e)})") from None
        return VideoSummary(output, frames.count, width, height, video.average_rate, audio is not None,
                            time.perf_counter() - started, dict(clock.seconds), config)
    finally:
        frames.close()
        container.close()
        if restore_level is None:
            av.logging.restore_default_callback()
            av.logging.set_level(None)
        elif restore_level < av.logging.ERROR:
            av.logging.set_level(restore_level)


def _expected_frames(video, rate) -> int | None:
    """The clip's frame count from its header, else estimated from its duration (for the progress bar's ETA)."""
    if video.frames:
        return video.frames
    seconds = video.duration * video.time_base if video.duration and video.time_base else None
    if seconds is None and video.container.duration:
        seconds = Fraction(video.container.duration, 1_000_000)   # the container's, in microseconds
    return max(1, round(seconds * rate)) if seconds else None


def _output_streams(av, out, size, rate, video, audio, codec, options, rotation, output):
    """The output's video stream (input's size, frame rate, time base, aspect ratio, rotation) and audio stream
    (a copy of the input's codec parameters, or None)."""
    height, width = size
    v = out.add_stream(codec, rate=rate, options=options)
    v.width, v.height, v.pix_fmt = width, height, _pixel_format(av, codec, width, height)
    v.codec_context.time_base = video.time_base   # frames keep the input's timestamps
    if v.pix_fmt.startswith("yuv"):   # say how RGB became YUV (BT.601, limited range), or players guess by size
        v.codec_context.colorspace, v.codec_context.color_range = _BT601, _LIMITED_RANGE
    if video.sample_aspect_ratio:
        v.codec_context.sample_aspect_ratio = video.sample_aspect_ratio
    if rotation:
        if not hasattr(v, "set_display_rotation"):   # PyAV < 18 cannot write the tag: refuse, not play rotated
            raise VideoError(f"{output}: keeping the input's rotation tag needs PyAV >= 18 (pip install -U av)")
        v.set_display_rotation(rotation)
    if audio is None:
        return v, None
    try:
        return v, out.add_stream_from_template(audio)
    except ValueError:
        raise VideoError(f"{output}: a {output.suffix} file cannot hold the input's {audio.codec_context.name} "
                         f"audio, which is copied as it is: choose another container (.mkv holds most)") from None


def _transcode(av, tmp, first, frames, stylizer, video, audio, codec, options, progress, output, clock) -> None:
    """Decode (thread) -> stylize (this thread) -> encode and mux with the copied audio (thread), into `tmp`;
    `clock` gets the seconds each stage worked."""
    from tqdm.auto import tqdm
    try:
        out = av.open(tmp, "w")
    except (av.FFmpegError, ValueError) as e:
        raise VideoError(f"{output}: not a container FFmpeg can write ({one_line(e)})") from None
    try:
        rate = video.average_rate or video.guessed_rate or Fraction(25)
        try:
            v, a = _output_streams(av, out, first[0].shape[:2], rate, video, audio, codec, options, frames.rotation,
                                   output)
        except VideoError:
            raise
        except ValueError as e:   # PyAV's refusals of a codec in this container
            raise VideoError(f"{output}: {one_line(e)}") from None
        step = max(1, round(1 / (rate * video.time_base))) if video.time_base else 1
        even = v.width % 2 == 0 and v.height % 2 == 0     # an odd-sized yuv420p stream is FFmpeg's scaler's job
        stylizer.pixel_format = "yuv420p" if v.pix_fmt == "yuv420p" and even else "rgb24"

        stop = threading.Event()
        decoded: queue.Queue = queue.Queue(maxsize=2)     # batches: (frames [B, H, W, 3], their timestamps)
        stylized: queue.Queue = queue.Queue(maxsize=2)    # batches on their way back from the model

        def decode():
            decoded_frames = itertools.chain([first], frames)
            while True:
                with clock("decode"):
                    batch = list(itertools.islice(decoded_frames, stylizer.batch_size))
                    if not batch:
                        break
                    item = stylizer.stack([img for img, _ in batch]), [pts for _, pts in batch]
                if not _put(decoded, item, stop):
                    return
            _put(decoded, _END, stop)

        def mux_audio():
            while not frames.audio.empty():
                packet = frames.audio.get()
                packet.stream = a
                out.mux(packet)

        def encode():
            last = None
            while (item := _get(stylized, stop)) is not _END:
                images, ready, timestamps = item
                clock.seconds["stylize"] += ready()   # waits for the model's output (on CUDA)
                with clock("encode"):
                    for img, pts in zip(images.numpy(), timestamps):   # a padded batch's extra frames dropped
                        if pts is None or (last is not None and pts <= last):   # missing or repeated timestamps
                            pts = 0 if last is None else last + step
                        last = pts
                        frame = av.VideoFrame.from_ndarray(img, format=stylizer.pixel_format)
                        frame.pts, frame.time_base = pts, video.time_base
                        out.mux(v.encode(frame))
                    if a is not None:
                        mux_audio()
                bar.update(len(timestamps))
            if stop.is_set():   # stopped, not finished: nothing more is written
                return
            with clock("encode"):
                out.mux(v.encode(None))
                if a is not None:
                    mux_audio()

        bar = tqdm(total=_expected_frames(video, rate), unit="frame", disable=not progress, desc=output.name)
        workers = [_Worker(decode, stop, "mambast-video-decode"), _Worker(encode, stop, "mambast-video-encode")]
        for w in workers:
            w.start()
        try:
            while (item := _get(decoded, stop)) is not _END:
                batch, timestamps = item
                if not _put(stylized, (*stylizer(batch), timestamps), stop):
                    break
            _put(stylized, _END, stop)
            workers[1].join()
        finally:
            stop.set()   # whatever happened, the workers end (and a failure or Ctrl-C here stops them)
            for w in workers:
                w.join()
            bar.close()
        for w in workers:
            if w.error is not None:
                raise w.error
    except BaseException:
        try:
            out.close()
        except av.FFmpegError:   # the trailer of a file being thrown away; the first error is the one to report
            pass
        raise
    out.close()
