"""`mambast serve`: a local web page to stylize images with the controls (strength, style mixing, colour
preservation, region masks).

The page is built with Gradio, an optional extra (`pip install "mambast[web]"`), imported only when a page is
built: `import mambast` and `mambast --help` never load it. The work itself is `StylizePage`, which needs no
Gradio: one model loaded once per process, uploads read with the same checks as the command line (and a
pixel cap of its own), one stylization at a time, progress reported from the model's stages.
"""

from __future__ import annotations

import html
import os
import re
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from .errors import ImageError, MambastError, one_line, resource_error

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 7860
GRADIO_VERSIONS = ((6, 17, 3), (7,))   # the web extra's range: older 6.x pages fetch a script from a CDN
STYLE_SLOTS = 4                       # style uploads on the page; the Python API and CLI take any number
MAX_UPLOAD_BYTES = 50 * 1024 * 1024   # refused by the page before the upload is sent
MAX_UPLOAD_PIXELS = 50_000_000        # a 48 MP phone photo fits; the result is written at the content's size
SIZE_RANGE, SIZE_STEP = (64, 1024), 8  # working sizes the page offers (the CLI goes to 4096)
BORDER_MARGIN = 16                     # "Clean borders": the margin that moved most stripes out (docs/quality.md)
# What browsers display; other formats Pillow reads (TIFF, PPM, ...) are shown as a PNG of what the model sees.
BROWSER_SUFFIXES = {".png", ".jpg", ".jpeg", ".jfif", ".gif", ".webp", ".bmp", ".ico"}
# The model's parts in the order a stylization runs them, each with the share of the work done before it
# starts (the four take about equal CPU time at 512 pixels) and what the page says while it runs.
STAGES = (("encoder_c", 0.05, "encoding the content"), ("encoder_s", 0.3, "encoding the styles"),
          ("decoder", 0.55, "fusing content and style"), ("cnn_decoder", 0.8, "decoding the pixels"))


class WebError(MambastError):
    """The page cannot start (Gradio missing, port taken, ...)."""


def import_gradio():
    """Gradio, or a one-line WebError saying how to install it."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")   # a local page sends no usage reports
    try:
        import gradio
    except ImportError:
        raise WebError("serve needs Gradio: pip install 'mambast[web]' (or pip install gradio)") from None
    version = tuple(int(x) for x in re.findall(r"\d+", gradio.__version__)[:3])
    if not GRADIO_VERSIONS[0] <= version < GRADIO_VERSIONS[1]:
        low, high = (".".join(map(str, v)) for v in GRADIO_VERSIONS)
        raise WebError(f"serve needs Gradio >= {low} and < {high}, found {gradio.__version__}: "
                       "pip install 'mambast[web]'")
    return gradio


def read_upload(path, label: str):
    """An uploaded image file decoded to RGB (EXIF orientation applied); ImageError naming `label` and the
    file's name (not the server's temporary path) if it is not an image, corrupt, or too large."""
    from PIL import Image

    from .io import load_image
    path = Path(path)
    where = f"{label} ({path.name})"
    try:
        with Image.open(path) as img:   # the header only: refuse a huge image before decoding it
            pixels = img.width * img.height
            if pixels > MAX_UPLOAD_PIXELS:
                raise ImageError(f"{where}: refused: too many pixels ({img.width} x {img.height} = {pixels:,}; "
                                 f"the page takes up to {MAX_UPLOAD_PIXELS:,})")
    except ImageError:
        raise
    except Exception:   # not an image, or a broken header: load_image says which, in its words
        pass
    try:
        return load_image(path)
    except ImageError as e:
        raise ImageError(str(e).replace(str(path), where, 1)) from None


@contextmanager
def stage_progress(model, report):
    """Call report(fraction, description) as each part of `model` starts (`STAGES`), while inside."""
    handles = []
    for name, fraction, desc in STAGES:
        part = getattr(model, name, None)
        if part is not None:
            handles.append(part.register_forward_pre_hook(lambda *_, f=fraction, d=desc: report(f, d)))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def run_controls(model, content, styles, weights, mask, **settings):
    """One stylization with the controls, through `mambast.stylize` (the one implementation of them)."""
    from .inference.api import stylize
    return stylize(content, styles, model, weights=weights, mask=mask, **settings)


class StylizePage:
    """What the page does, without Gradio: one model kept loaded, one stylization at a time."""

    def __init__(self, model, dtype: str | None = None):
        self.model, self.dtype = model, dtype
        self._lock = threading.Lock()   # one model, one stylization at a time (the queue also runs one)

    def stylize(self, content, styles, weights, mask=None, *, strength=1.0, preserve_color=False, seed=None,
                size=512, margin=0, progress=None):
        """The result (PIL) for uploaded files: content, styles (paths, empty slots as None) with one weight each,
        an optional mask. Raises ImageError or ValueError with a one-line message before any model work."""
        report = progress or (lambda fraction, desc: None)
        if content is None:
            raise ValueError("add a content image")
        chosen = [(i, path, w) for i, (path, w) in enumerate(zip(styles, weights), 1) if path is not None]
        if not chosen:
            raise ValueError("add at least one style image")
        if mask is not None and [i for i, *_ in chosen] != list(range(1, len(chosen) + 1)):
            raise ValueError("with a mask, fill the style slots in order from style 1 (region k takes style k)")
        if seed is not None and seed != int(seed):
            raise ValueError(f"seed must be a whole number; got {seed}")
        report(0.0, "reading the images")
        content_img = read_upload(content, "content")
        style_imgs = [read_upload(path, f"style {i}") for i, path, _ in chosen]
        mask_img = read_upload(mask, "mask") if mask is not None else None
        settings = dict(strength=float(strength), preserve_color=bool(preserve_color),
                        seed=None if seed is None else int(seed), size=int(size), margin=int(margin))
        if self.dtype is not None:
            settings["dtype"] = self.dtype
        with self._lock, stage_progress(self.model, report):
            mixed = len(chosen) > 1 and mask_img is None   # a mask places the styles: the weights do not apply
            return run_controls(self.model, content_img, style_imgs, [float(w) for *_, w in chosen] if mixed else None,
                                mask_img, **settings)


def check_upload(path, label: str):
    """An upload's preview: None (keep the file as it is) for an image a browser shows, the decoded image for
    one it does not (TIFF, PPM, ...); ImageError if it cannot be used."""
    img = read_upload(path, label)
    return None if Path(path).suffix.lower() in BROWSER_SUFFIXES else img


def user_message(e: BaseException) -> str | None:
    """The page's one line for an error of the input (a bad upload or setting) or of the machine (out of memory
    or disk space); None for any other error, a bug."""
    if isinstance(e, (MambastError, ValueError)):
        return one_line(e)
    message = resource_error(e)
    if message is not None and message.startswith("out of memory"):
        return "out of memory: try a smaller working size"
    return message


PAGE_INTRO = """\
# mambast: style transfer with Mamba-ST
Drop a **content** image and one or more **style** images, set the controls, press **Stylize**.
Several styles are mixed by their weights; with a **mask**, its grey levels (darkest first) give each region
its style instead (style 1 for the darkest; the weights are then not used). The result has the content's size:
download it from its corner.
"""


def build_page(page: StylizePage, device: str = "cpu"):
    """The Gradio Blocks of the page (not launched)."""
    gr = import_gradio()

    def upload(label, **kw):
        """A gr.Image that hands the uploaded file on untouched: every image is decoded by `read_upload`, with
        the command line's checks and messages, instead of by Gradio. (The method is replaced on the instance:
        subclassing a Gradio component makes Gradio write a .pyi file beside this module.)"""
        box = gr.Image(label=label, type="filepath", image_mode=None, format="png", sources=["upload", "clipboard"],
                       height=220, **kw)
        decode = box.preprocess

        def preprocess(payload):
            if payload is not None and payload.path and not (payload.url or "").startswith("data:"):
                return payload.path
            return decode(payload)   # pasted from the clipboard: a data URL Gradio writes to a file
        box.preprocess = preprocess
        return box

    def on_upload(label):
        def check(path):
            if path is None:
                return gr.skip()
            try:
                preview = check_upload(path, label)
            except ImageError as e:
                gr.Warning(html.escape(str(e)), duration=None)
                return None
            return gr.skip() if preview is None else preview
        return check

    with gr.Blocks(title="mambast", analytics_enabled=False, delete_cache=(600, 3600)) as demo:
        gr.Markdown(PAGE_INTRO)
        with gr.Row():
            with gr.Column(scale=3):
                with gr.Row():
                    content = upload("Content", elem_id="content")
                    mask = upload("Mask (optional)", elem_id="mask")
                styles, weights = [], []
                with gr.Row():
                    for i in range(1, STYLE_SLOTS + 1):
                        with gr.Column(min_width=150):
                            styles.append(upload(f"Style {i}", elem_id=f"style{i}"))
                            weights.append(gr.Slider(0, 1, value=1, step=0.05, label=f"Weight {i}",
                                                     elem_id=f"weight{i}"))
                with gr.Row():
                    strength = gr.Slider(0, 1, value=1, step=0.05, label="Strength", elem_id="strength",
                                         info="0: the content as the model rebuilds it, 1: fully stylized")
                    size = gr.Slider(*SIZE_RANGE, value=512, step=SIZE_STEP, label="Working size", elem_id="size",
                                     info="short side while stylizing; the result keeps the content's size")
                with gr.Row():
                    preserve = gr.Checkbox(label="Preserve the content's colours", elem_id="preserve")
                    borders = gr.Checkbox(label="Clean borders", elem_id="borders",
                                          info=f"mirror {BORDER_MARGIN} px around the content while stylizing")
                    seed = gr.Number(value=0, precision=0, label="Seed", elem_id="seed",
                                     info="the same seed gives the same picture")
                button = gr.Button("Stylize", variant="primary", elem_id="run")
            with gr.Column(scale=2):
                result = gr.Image(label="Result", type="pil", format="png", interactive=False, elem_id="result",
                                  height=460, buttons=["download", "fullscreen"])
                status = gr.Markdown(elem_id="status")

        for comp, label in [(content, "content"), (mask, "mask"), *((s, f"style {i}") for i, s in enumerate(styles, 1))]:
            comp.upload(on_upload(label), inputs=comp, outputs=comp, show_progress="hidden")

        def run(values, progress=gr.Progress()):   # values: {component: value} of the inputs below
            start = time.perf_counter()
            try:
                out = page.stylize(values[content], [values[s] for s in styles], [values[w] for w in weights],
                                   values[mask], strength=values[strength], preserve_color=values[preserve],
                                   seed=values[seed], size=values[size],
                                   margin=BORDER_MARGIN if values[borders] else 0,
                                   progress=lambda f, d: progress(f, desc=d))
            except Exception as e:
                message = user_message(e)
                if message is None:   # a bug: Gradio shows it and the server logs its traceback
                    raise
                raise gr.Error(html.escape(message), print_exception=False) from None
            took = time.perf_counter() - start
            return out, f"{out.width} x {out.height} pixels in {took:.1f} s on {device}"

        button.click(run, inputs={content, mask, strength, size, preserve, borders, seed, *styles, *weights},
                     outputs=[result, status], concurrency_limit=1)
    return demo


def check_port(host: str, port: int) -> None:
    """WebError if this process cannot listen on host:port (in use, or an address not on this machine)."""
    import socket
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise WebError(f"--host {host}: unknown address ({e.strerror})") from None
    family, *_, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as the server does: a closed port is reused
        try:
            s.bind(address)
        except OSError as e:
            raise WebError(f"cannot serve on {host}:{port}: {e.strerror or e} (pick another --port)") from None


def serve(model="default", *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, device=None, dtype=None,
          quiet: bool = False, block: bool = True):
    """Load the model once, warm it up, and serve the page at http://host:port until interrupted
    (block=False: return the running Gradio app). WebError (one line) if Gradio is missing or the port taken."""
    gr = import_gradio()
    check_port(host, port)   # before the model loads: a taken port is the commonest failure
    from PIL import Image

    from .inference.api import load_model
    from .inference.config import StylizeConfig
    config = StylizeConfig(device=device, dtype=dtype).resolved()
    say = (lambda *a: None) if quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    say(f"loading the model ({model}) on {config.device}")
    page = StylizePage(load_model(model, config), dtype=config.dtype)
    probe = Image.new("RGB", (64, 64), (128, 128, 128))
    run_controls(page.model, probe, [probe], None, None, strength=1.0, preserve_color=False, seed=0, size=64,
                 dtype=config.dtype)   # compiles the CPU scan now rather than during the first request
    demo = build_page(page, config.device)
    demo.queue(default_concurrency_limit=1)
    if host not in ("127.0.0.1", "localhost", "::1"):
        say(f"warning: listening on {host}: other machines on the network can use this page")
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])   # system fonts: nothing fetched
    try:
        demo.launch(server_name=host, server_port=port, share=False, inbrowser=False, quiet=True,
                    prevent_thread_lock=True, max_file_size=MAX_UPLOAD_BYTES, ssr_mode=False, footer_links=[],
                    theme=theme, show_error=True)
    except OSError:   # taken between the check and now
        raise WebError(f"cannot serve on {host}:{port}: the port is in use (pick another with --port)") from None
    say(f"serving on {demo.local_url} (Ctrl-C to stop)")
    if block:
        demo.block_thread()
    return demo
