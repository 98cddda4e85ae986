"""Stylize a video clip with one style image: decode (PyAV), stylize frames in batches, encode, copy the audio.

Every frame shares one encoding of the style and one draw of the style permutations, so a still scene gives
identical frames; the output appears only once complete. PyAV and torch load on first call.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from .errors import VideoError, one_line

DEFAULT_BATCH_SIZE = 4
DEFAULT_CRF = 18                  # visually near-lossless for x264/x265; lower is better, 0 lossless
# Weight of the previous frame's smoothed content tokens (0: off). Measured on a panning clip (docs/video.md):
# smoothing lowers frame-to-frame change only by trailing the motion, so it stays off unless asked for.
DEFAULT_SMOOTHING = 0.0
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


def _encoder_options(av, codec: str, crf: int | None) -> tuple[str, dict]:
    """(codec name, encoder options) of a video encoder name; VideoError for names FFmpeg cannot encode video with."""
    try:
        found = av.codec.Codec(codec, "w")
    except Exception:   # PyAV raises UnknownCodecError (a ValueError) or, in older versions, other types
        raise VideoError(f"codec {codec!r} is not a video encoder of this FFmpeg (try libx264, libx265, "
                         f"libvpx-vp9, mpeg4)") from None
    if found.type != "video":
        raise VideoError(f"codec {codec!r} is a {found.type} encoder, not a video one")
    extra = {"x265-params": "log-level=error"} if found.name == "libx265" else {}   # x265 prints a page otherwise
    with_crf = found.name in ("libx264", "libx264rgb", "libx265", "libvpx", "libvpx-vp9", "libaom-av1", "libsvtav1")
    if crf is not None and not with_crf:
        raise VideoError(f"codec {codec!r} has no crf quality setting (give crf=None)")
    if crf is not None and not 0 <= crf <= 63:
        raise VideoError(f"crf must be in 0..63; got {crf}")
    return found.name, ({"crf": str(DEFAULT_CRF if crf is None else crf)} if with_crf else {}) | extra


def _pixel_format(av, codec: str, width: int, height: int) -> str:
    """yuv420p where the encoder takes it and the size is even (what players expect), else a full-chroma one."""
    formats = [f.name for f in (av.codec.Codec(codec, "w").video_formats or ())]
    even = width % 2 == 0 and height % 2 == 0
    for name in (["yuv420p"] if even else []) + ["yuv444p", "rgb24", "yuv420p"]:
        if not formats or name in formats:
            return name
    return formats[0]


# ------------------------------------------------------------------------------------------- the stages

class _Frames:
    """Decoded frames of a clip as (rgb [H, W, 3] uint8, pts); audio packets go to `audio` as they are demuxed.

    Raises VideoError where the file turns out to be corrupt or shorter than its header says."""

    def __init__(self, av, path: Path, container, video, audio):
        self.av, self.path, self.container, self.video, self.audio_stream = av, path, container, video, audio
        self.audio: queue.SimpleQueue = queue.SimpleQueue()
        self.count, self.rotation = 0, 0   # rotation: counter-clockwise degrees of the display matrix
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
                        self.count += 1
                        yield frame.to_ndarray(format="rgb24"), frame.pts
            except self.av.FFmpegError as e:
                raise VideoError(f"{self.path}: corrupt or truncated at frame {self.count + 1} ({one_line(e)})") \
                    from None
        cut = [m for level, name, m in logs if name == fmt and level <= self.av.logging.ERROR]
        if cut or (self.video.frames and self.count < self.video.frames):
            why = one_line(cut[0]) if cut else f"{self.count} of {self.video.frames} frames decoded"
            raise VideoError(f"{self.path}: truncated or corrupt ({why})")


class _Stylizer:
    """Frames [B, H, W, 3] uint8 -> stylized frames of the same size, with one style's tokens and permutations
    for all, and the content tokens optionally smoothed over time (exponential moving average)."""

    def __init__(self, model, style, size: int, frame_hw: tuple[int, int], seed: int, smoothing: float, amp):
        import torch
        from .inference.geometry import check_working_size, prepare_style, working_size
        from .inference.precision import autocast
        from .model import as_generator, draw_permutations
        self.model, self.frame_hw, self.smoothing = model, frame_hw, smoothing
        p = next(model.parameters())
        self.device, self.dtype, self.patch = p.device, p.dtype, model.config.patch_size
        self.working = working_size(*frame_hw, size, self.patch)
        try:
            check_working_size(*self.working, self.device)
        except ValueError as e:
            raise VideoError(str(e)) from None
        self.amp = lambda: autocast(self.device.type, amp)  # noqa: E731
        with torch.inference_mode(), self.amp():
            s = prepare_style(style.to(self.device, torch.float32), self.working, self.patch)
            self.style_tokens = model.encode_style(s.to(self.dtype))                      # [1, H', W', C]
        n, L = model.config.depth_decoder, self.style_tokens.shape[1] * self.style_tokens.shape[2]
        self.perms = draw_permutations(n, L, as_generator(seed, "cpu"), self.device)
        self.previous = None                                                               # smoothed tokens

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
        import numpy as np
        import torch
        from .inference.geometry import finish_output, pad_to_multiple, resize
        with torch.inference_mode():
            x = torch.from_numpy(np.stack(frames)).to(self.device, non_blocking=True)
            x = x.permute(0, 3, 1, 2).float().div_(255.0)                                 # [B, 3, H, W]
            c = pad_to_multiple(resize(x, self.working), self.patch)[0]
            with self.amp():
                tokens = self._smooth(self.model.encode_content(c.to(self.dtype)))        # [B, H', W', C]
                style = self.style_tokens.expand(len(tokens), -1, -1, -1)
                y = self.model.decode(tokens, style, perms=self.perms)                    # [B, 3, H'', W'']
            y = finish_output(y, self.working, self.frame_hw)
            return y.mul_(255.0).add_(0.5).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


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

def stylize_video(input, style, output, *, model=None, size: int = 512, batch_size: int = DEFAULT_BATCH_SIZE,
                  seed: int = 0, codec: str = "libx264", crf: int | None = None, device=None,
                  dtype: str | None = None, smoothing: float = DEFAULT_SMOOTHING,
                  progress: bool = True) -> VideoSummary:
    """Stylize every frame of the clip `input` with the image `style` and write the clip `output`.

    The output keeps the input's resolution, frame timestamps (so frame rate and count), rotation tag and
    first audio stream (its packets copied, not re-encoded); its container comes from the suffix (.mp4,
    .mkv, ...). model: a MambaST, a weights path, or None for the bundled model. size: the working short side
    (as for images). batch_size: frames per model call. seed: draws the style permutations, once for the clip.
    codec: an FFmpeg video encoder; crf: its quality for x264/x265/VP9/AV1 (lower is better; None: 18).
    dtype: "float32", "bfloat16" or "float16" compute (default bfloat16 on CUDA, float32 on CPU).
    smoothing: in [0, 1), the weight of the previous frame's content tokens (exponential moving average;
    0 is off, see docs/video.md). The output is written to a temporary file beside it and renamed at the
    end: an error or Ctrl-C leaves no output. Bad inputs raise `mambast.errors.VideoError` (one line),
    an unreadable style image `ImageError`.
    """
    av = _import_av()
    input, output = Path(input), Path(output)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise VideoError(f"batch_size must be an int >= 1; got {batch_size!r}")
    if not isinstance(size, int) or size < 1:
        raise VideoError(f"size must be an int >= 1; got {size!r}")
    if not 0 <= smoothing < 1:
        raise VideoError(f"smoothing must be in [0, 1); got {smoothing!r}")
    if not output.suffix:
        raise VideoError(f"{output}: give the output a suffix naming its container (.mp4, .mkv, .mov, ...)")
    if output.resolve() == input.resolve():
        raise VideoError(f"{output}: the output would replace the input")
    codec, options = _encoder_options(av, codec, crf)
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
        style_img = _load_style(style)
        model, amp = _load_model(model, device, dtype)
        height, width = first[0].shape[:2]
        stylizer = _Stylizer(model, style_img, size, (height, width), seed, smoothing, amp)
        from .atomic import atomic_write

        def write(tmp: str) -> None:
            _transcode(av, tmp, first, frames, stylizer, video, audio, codec, options, batch_size, progress,
                       output)
        try:
            atomic_write(output, write, suffix=output.suffix)
        except av.FFmpegError as e:
            raise VideoError(f"{output}: cannot write video ({one_line(e)})") from None
        return VideoSummary(output, frames.count, width, height, video.average_rate, audio is not None,
                            time.perf_counter() - started)
    finally:
        frames.close()
        container.close()
        if restore_level is None:
            av.logging.restore_default_callback()
            av.logging.set_level(None)
        elif restore_level < av.logging.ERROR:
            av.logging.set_level(restore_level)


def _load_style(style):
    """The style as a [1, 3, h, w] float tensor: a path, a PIL image or a tensor."""
    import torch
    from .io import load_image, pil_to_tensor
    if isinstance(style, torch.Tensor):
        return style if style.dim() == 4 else style[None]
    return pil_to_tensor(load_image(style) if isinstance(style, (str, Path)) else style)


def _load_model(model, device, dtype):
    """(model in eval mode, autocast dtype): a MambaST as given, or loaded from a path (None: the bundled one)."""
    import torch
    from .inference.config import autocast_dtype, default_device
    from .inference.precision import cast_autocast_weights
    from .model import MambaST
    if isinstance(model, torch.nn.Module):
        return model.eval(), autocast_dtype(dtype, next(model.parameters()).device)
    device = device or default_device()
    amp = autocast_dtype(dtype, device)
    return cast_autocast_weights(MambaST.from_pretrained(model or "default"), amp, device).eval(), amp


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


def _transcode(av, tmp, first, frames, stylizer, video, audio, codec, options, batch_size, progress,
               output) -> None:
    """Decode (thread) -> stylize (this thread) -> encode and mux with the copied audio (thread), into `tmp`."""
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

        stop = threading.Event()
        decoded: queue.Queue = queue.Queue(maxsize=2 * batch_size)
        stylized: queue.Queue = queue.Queue(maxsize=2)

        def decode():
            _put(decoded, first, stop)
            for item in frames:
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
            while (batch := _get(stylized, stop)) is not _END:
                for img, pts in batch:
                    if pts is None or (last is not None and pts <= last):   # missing or repeated timestamps
                        pts = 0 if last is None else last + step
                    last = pts
                    frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                    frame.pts, frame.time_base = pts, video.time_base
                    out.mux(v.encode(frame))
                if a is not None:
                    mux_audio()
            if stop.is_set():   # stopped, not finished: nothing more is written
                return
            out.mux(v.encode(None))
            if a is not None:
                mux_audio()

        workers = [_Worker(decode, stop, "mambast-video-decode"), _Worker(encode, stop, "mambast-video-encode")]
        for w in workers:
            w.start()
        bar = tqdm(total=_expected_frames(video, rate), unit="frame", disable=not progress, desc=output.name)
        try:
            done = False
            while not done:
                batch = []
                while len(batch) < batch_size:
                    item = _get(decoded, stop)
                    if item is _END:
                        done = True
                        break
                    batch.append(item)
                if batch:
                    images = stylizer([img for img, _ in batch])
                    if not _put(stylized, list(zip(images, (pts for _, pts in batch))), stop):
                        break
                    bar.update(len(batch))
            _put(stylized, _END, stop)
            workers[1].join()
        finally:
            stop.set()   # whatever happened, the workers end (and a failure or Ctrl-C here stops them)
            bar.close()
            for w in workers:
                w.join()
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
