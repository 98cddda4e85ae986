"""Dataset planning: a content folder tree (or a manifest of pairs) and styles -> output files in a mirrored tree,
or samples in shards (`mambast.inference.shards`).

Which pairs to stylize, into which files, and which are done already; nothing here runs a model or imports torch
or Ray (`mambast.inference.ray_engine` runs a plan). Plans hold strings, not `Job`s: a million-image plan then
fits in a few hundred MB on the machine that drives the job.

The output folder is the checkpoint: an output present there (or a sample in a finished shard) is done (a rerun
skips it), and the temporary files of writes a killed run cut short are removed when the folder is read.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from ..atomic import is_temp_of
from ..errors import JobError, why_missing
from .jobs import IMAGE_OUTPUT_SUFFIXES, Job, clash_message, name_too_long, output_name, unwritable_message
from .shards import DEFAULT_SHARD_SIZE, SHARD_KINDS, read_shards, sample_key, shard_name

PAIRINGS = ("all", "random")
FORMATS = ("png", "jpg", "webp")
MANIFEST_SUFFIXES = (".csv", ".parquet")
ERRORS_FILE = "errors.jsonl"


@dataclass
class DatasetPlan:
    """Pairs to stylize as three columns of absolute paths (`contents[i]` with `styles[i]` into `outputs[i]`);
    `present`: outputs already there (kept); `refused`: one-line reasons for pairs that cannot be written, with
    how many pairs each covers; `root`: the output folder (the errors file goes there). With `shards`
    ("webdataset" or "parquet") the pairs go, `shard_size` at a time in plan order, into shards numbered from
    `first_shard`, each image encoded as `format`; `outputs` are then the names folder mode would write."""
    root: Path
    contents: list[str] = field(default_factory=list)
    styles: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    present: int = 0
    refused: list[tuple[str, int]] = field(default_factory=list)
    format: str = "png"
    shards: str | None = None
    shard_size: int = DEFAULT_SHARD_SIZE
    first_shard: int = 0

    def __len__(self) -> int:
        return len(self.outputs)

    @property
    def failed(self) -> int:
        return sum(n for _, n in self.refused)

    @property
    def errors_file(self) -> Path:
        return self.root / ERRORS_FILE

    def add(self, content: str, style: str, output: str) -> None:
        self.contents.append(content)
        self.styles.append(style)
        self.outputs.append(output)

    def jobs(self) -> Iterator[Job]:
        return (Job(c, s, o) for c, s, o in zip(self.contents, self.styles, self.outputs))

    def shard_bounds(self) -> Iterator[tuple[str, int, int]]:
        """(shard file name, first pair, end) of each shard the pairs go into: cut here, on the driver, so that
        a shard's number and pairs are fixed before any actor runs (a retried task rewrites the same shard)."""
        for i, start in enumerate(range(0, len(self), self.shard_size)):
            yield shard_name(self.first_shard + i, self.shards), start, min(start + self.shard_size, len(self))

    def relative(self, output: str) -> str:
        """An output's name relative to the output folder (every planned output is inside it)."""
        return output[_prefix_length(self.root):]


def _prefix_length(root: Path) -> int:
    """Characters of root and its separator at the start of a path inside it (a string slice costs a fraction
    of os.path.relpath, for a million outputs)."""
    return len(os.path.join(str(root), ""))


def random_style(content: str, n_styles: int, seed: int | None) -> int:
    """The index of the style paired with a content (its path relative to the content folder) by
    `--pairing random`: a hash of the seed (None: 0) and the path, so a content keeps its style whatever else is
    in the folder, in any order, on any machine."""
    digest = hashlib.blake2b(f"{seed or 0}\0{Path(content).as_posix()}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % n_styles


def plan_dataset(content, output, style=None, pairing: str = "all", seed: int | None = None,
                 format: str = "png", overwrite: bool = False, shards: str | None = None,
                 shard_size: int | None = None) -> DatasetPlan:
    """Plan stylizing a dataset into the folder OUTPUT.

    content: a folder, read recursively, or a manifest (.csv or .parquet) with columns content, style and
    optionally output (paths relative to the manifest's folder; outputs relative to OUTPUT). With a folder,
    style (an image or a folder, read recursively) and `pairing` pick the styles: "all" pairs every content with
    every style into OUTPUT/<subfolder>/<content>_stylized_<style>.<format>; "random" gives each content one
    style (`random_style`) into OUTPUT/<subfolder>/<content>.<format>, as Stylized-ImageNet is laid out.
    Outputs already there are kept unless overwrite. shards ("webdataset" or "parquet"): the images go into
    shards of shard_size pairs (default 1000) in OUTPUT instead, encoded as `format`; the pairs in finished
    shards are kept (a shard is never rewritten, so overwrite does not apply). JobError for missing inputs, a
    bad OUTPUT or settings that do not go together."""
    if pairing not in PAIRINGS:
        raise JobError(f"pairing must be one of {', '.join(PAIRINGS)}; got {pairing!r}")
    if format not in FORMATS:
        raise JobError(f"format must be one of {', '.join(FORMATS)}; got {format!r}")
    _check_shards(shards, shard_size, overwrite)
    content, root = Path(content), Path(os.path.abspath(output))
    for path in (root, os.path.abspath(content), style and os.path.abspath(style)):
        if path and _not_utf8([str(path)]):   # in every pair's paths: refused whole
            raise JobError(_not_utf8_message(str(path)))
    try:
        if not content.exists():
            raise JobError(f"{content}: {why_missing(content, 'no such folder or manifest')} (content)")
        refused: list[tuple[str, int]] = []
        if content.is_dir():
            rows, refused = _pair_folders(content, style, root, pairing, seed, "." + format)
        elif content.suffix.lower() in MANIFEST_SUFFIXES:
            if style is not None:
                raise JobError(f"{content}: a manifest pairs its contents with its styles: give no style folder")
            rows = _manifest_rows(content, root, "." + format)
        else:
            raise JobError(f"{content}: give a folder of images or a manifest ({', '.join(MANIFEST_SUFFIXES)})")
        there = next(p for p in (root, *root.parents) if p.exists())   # the output folder, or where it will be made
        if not there.is_dir():
            raise JobError(f"{there}: exists and is not a folder" + ("" if there == root else
                                                                     f" (the output folder {output} would be in it)"))
        plan = _sort_into_shards(rows, root, shards, format) if shards else _sort(rows, root, overwrite)
    except OSError as e:   # a path the system refuses to look at (no permission, ...)
        raise JobError(f"{e.filename or output}: {e.strerror or e}") from None
    plan.refused[:0] = refused
    plan.format = format
    if shards is not None:
        plan.shard_size = shard_size or DEFAULT_SHARD_SIZE
    return plan


def _check_shards(shards, shard_size, overwrite: bool) -> None:
    """The shard settings, named as the command's flags, refused before anything is read."""
    if shards is None:
        if shard_size is not None:
            raise JobError(f"--shard-size applies with --shards ({' or '.join(SHARD_KINDS)}); got --shard-size "
                           f"{shard_size} alone")
        return
    if shards not in SHARD_KINDS:
        raise JobError(f"--shards must be one of {', '.join(SHARD_KINDS)}; got {shards!r}")
    if shard_size is not None and shard_size < 1:
        raise JobError(f"--shard-size must be at least 1; got {shard_size}")
    if overwrite:
        raise JobError("--overwrite does not apply to --shards (a finished shard is never rewritten): to redo "
                       "them, remove the shards or write to another folder")


def _pair_folders(content: Path, style, root: Path, pairing: str, seed,
                  suffix: str) -> tuple[list[tuple[str, str, str]], list[tuple[str, int]]]:
    """The rows (content, style, output) of a content folder and its styles, and the pairs refused for a file
    name that is not UTF-8 (`_not_utf8`)."""
    from ..io import walk_images
    if style is None:
        raise JobError("a content folder needs a style image or folder")
    style = Path(style)
    if not style.exists():
        raise JobError(f"{style}: {why_missing(style, 'no such file or folder')} (style)")
    for name, folder in (("content", content), ("style", style)):
        if folder.is_dir() and _inside(root, folder):
            raise JobError(f"{root}: the output folder is inside the {name} folder (a rerun would read outputs "
                           "as inputs): write elsewhere")
    contents = walk_images(content)
    styles = walk_images(style) if style.is_dir() else [style.name]
    style_base = os.path.abspath(style if style.is_dir() else style.parent)
    if not contents:
        raise JobError(f"{content}: folder has no images")
    if not styles:
        raise JobError(f"{style}: folder has no images")
    content_base = os.path.abspath(content)
    styles_abs = [os.path.join(style_base, s) for s in styles]
    rows = []
    for c in contents:
        folder = os.path.join(root, os.path.dirname(c))
        c_abs = os.path.join(content_base, c)
        if pairing == "all":
            rows += [(c_abs, s_abs, os.path.join(folder, output_name(c, s, suffix)))
                     for s, s_abs in zip(styles, styles_abs)]
        else:
            stem = os.path.splitext(os.path.basename(c))[0]
            rows.append((c_abs, styles_abs[random_style(c, len(styles), seed)], os.path.join(folder, stem + suffix)))
    if pairing == "random":   # a style's contents together: an actor decodes (and often encodes) a style once for all
        rows.sort(key=lambda row: (row[1], row[0]))
    # refused after pairing: a random pairing must not change with the names left out
    bad = {os.path.join(content_base, c) for c in _not_utf8(contents)}
    bad.update(os.path.join(style_base, s) for s in _not_utf8(styles))
    if not bad:
        return rows, []
    refused: dict[str, int] = {}
    kept = []
    for row in rows:
        name = row[0] if row[0] in bad else row[1] if row[1] in bad else None
        if name is None:
            kept.append(row)
        else:
            refused[name] = refused.get(name, 0) + 1
    return kept, [(_not_utf8_message(name), n) for name, n in refused.items()]


def _not_utf8(names: list[str]) -> list[str]:
    """The names that are not UTF-8 text: bytes a Linux file name may hold, which Python reads as surrogates and
    Ray's Arrow tables (and the shards) cannot carry."""
    bad = []
    for name in names:
        if not name.isascii():
            try:
                name.encode()
            except UnicodeEncodeError:
                bad.append(name)
    return bad


def _not_utf8_message(name: str) -> str:
    shown = os.fsencode(name).decode("utf-8", "backslashreplace")   # the bytes that are not UTF-8 as \xff
    return f"{shown}: the name is not UTF-8 (the dataset job carries names as UTF-8 text): rename it"


def _inside(path: Path, folder: Path) -> bool:
    path, folder = Path(os.path.realpath(path)), Path(os.path.realpath(folder))
    return path == folder or folder in path.parents


def _manifest_rows(manifest: Path, root: Path, suffix: str) -> list[tuple[str, str, str]]:
    table = _read_manifest(manifest)
    base = os.path.abspath(manifest.parent)
    rows = []
    outputs = table.get("output") or [None] * len(table["content"])
    for i, (c, s, o) in enumerate(zip(table["content"], table["style"], outputs), 2):
        where = f"{manifest}: row {i}"   # rows counted as a spreadsheet shows them (the header is row 1)
        if not c or not s:
            raise JobError(f"{where}: empty content or style")
        c_abs, s_abs = (os.path.normpath(os.path.join(base, p)) for p in (c, s))   # an absolute path stays as it is
        if o:
            if os.path.isabs(o) or os.path.normpath(o).split(os.sep)[0] == "..":   # ..x.png is inside
                raise JobError(f"{where}: output {o} must be a relative path inside the output folder")
            if os.path.splitext(o)[1].lower() not in IMAGE_OUTPUT_SUFFIXES:
                raise JobError(f"{where}: output {o} needs an image suffix (.png, .jpg, ...)")
            out = os.path.join(root, os.path.normpath(o))
        else:
            rel = os.path.relpath(c_abs, base)
            if rel.startswith(".."):
                raise JobError(f"{where}: content {c} is outside the manifest's folder: give its output in an "
                               "output column")
            out = os.path.join(root, os.path.dirname(rel), output_name(c, s, suffix))
        rows.append((c_abs, s_abs, out))
    if not rows:
        raise JobError(f"{manifest}: manifest has no rows")
    return rows


def _read_manifest(path: Path) -> dict[str, list]:
    """{column: values} of a CSV (with a header row) or Parquet manifest; JobError without content and style."""
    if path.suffix.lower() == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise JobError('reading a Parquet manifest needs pyarrow: pip install "mambast[ray]"') from None
        try:
            table = pq.read_table(path).to_pydict()
        except Exception as e:   # pyarrow raises several types for a file that is not Parquet
            raise JobError(f"{path}: cannot read the Parquet manifest ({str(e).splitlines()[0] if str(e) else e})") \
                from None
    else:
        try:
            with open(path, newline="", encoding="utf-8-sig") as f:
                reader = csv.DictReader(f)
                rows = list(reader)
                columns = reader.fieldnames or []
        except (UnicodeDecodeError, csv.Error) as e:
            raise JobError(f"{path}: cannot read the CSV manifest ({e})") from None
        table = {k: [r[k] for r in rows] for k in columns}
    missing = [k for k in ("content", "style") if k not in table]
    if missing:
        raise JobError(f"{path}: the manifest needs columns content and style (and optionally output); "
                       f"missing {', '.join(missing)}")
    return {k: [None if v is None else str(v).strip() for v in table[k]] for k in ("content", "style", "output")
            if k in table}


def _sort(rows: list[tuple[str, str, str]], root: Path, overwrite: bool) -> DatasetPlan:
    """Rows into a plan: clashes and names too long refused, outputs over inputs refused (JobError), outputs
    already there kept (unless overwrite); leftover temp files of expected outputs removed."""
    read_shards(root, None)   # a folder of shards is refused: the images would be written beside them
    plan = DatasetPlan(root)
    inputs = {p for c, s, _ in rows for p in (c, s)}
    by_output: dict[str, list[int]] = {}
    for i, (_, _, out) in enumerate(rows):
        if out in inputs:
            raise JobError(f"{out}: refusing to write over an input image")
        by_output.setdefault(out, []).append(i)
    existing = _read_output_tree(root, by_output)
    for out, idx in by_output.items():
        if len(idx) > 1:
            plan.refused.append((clash_message(out, [rows[i][:2] for i in idx]), len(idx)))
        elif name_too_long(out):
            plan.refused.append((unwritable_message(out, os.strerror(errno.ENAMETOOLONG)), 1))
        elif out in existing and not overwrite:
            plan.present += 1
        else:
            plan.add(*rows[idx[0]])
    return plan


def _sort_into_shards(rows: list[tuple[str, str, str]], root: Path, kind: str, format: str) -> DatasetPlan:
    """Rows into a plan of shards: pairs of one sample key refused (one output name, or names that differ only
    in their suffix), pairs in finished shards kept; leftover temp shards removed. Nothing is written at the
    output names, so neither their length nor the inputs there matter. JobError for finished shards of another
    format (the shards of a dataset share one), and for the outputs of a tree run in OUT (not resumed here,
    and the shards would be written beside them)."""
    finished = read_shards(root, kind)
    if finished.formats - {format}:
        held = sorted(finished.formats)
        raise JobError(f"{root}: holds {', '.join(held)} shards of an earlier run: resume them with --format "
                       f"{held[0]} (the shards of a dataset share one format), or write elsewhere")
    plan = DatasetPlan(root, shards=kind, first_shard=finished.next_number)
    start = _prefix_length(root)
    tree = finished.others - {ERRORS_FILE}
    by_key: dict[str, list[int]] = {}
    for i, (_, _, out) in enumerate(rows):
        if tree and out[start:].split(os.sep, 1)[0] in tree:
            raise JobError(f"{root}: holds the outputs of a run without --shards ({out[start:].split(os.sep)[0]}): "
                           "resume it without --shards, or write the shards elsewhere")
        by_key.setdefault(sample_key(out[start:]), []).append(i)
    for key, idx in by_key.items():
        if len(idx) > 1:
            outputs = list(dict.fromkeys(rows[i][2][start:] for i in idx))
            plan.refused.append((clash_message(rows[idx[0]][2], [rows[i][:2] for i in idx]) if len(outputs) == 1
                                 else f"{key}: outputs {', '.join(outputs)} would be one sample of the shards (their "
                                      "names differ only in the suffix): skipped (rename one)", len(idx)))
        elif key in finished.keys:
            plan.present += 1
        else:
            plan.add(*rows[idx[0]])
    return plan


def _read_output_tree(root: Path, outputs: dict[str, list[int]]) -> set[str]:
    """The expected outputs present under root (one folder listing per folder, not one look-up per output),
    removing the temp files a killed run left beside them."""
    by_folder: dict[str, dict[str, str]] = {}
    for out in outputs:
        folder, name = os.path.split(out)
        by_folder.setdefault(folder, {})[name] = out
    present = set()
    for folder, names in by_folder.items():
        try:
            entries = set(os.listdir(folder))
        except FileNotFoundError:
            continue
        except NotADirectoryError:
            raise JobError(f"{folder}: exists and is not a folder (outputs go there)") from None
        present.update(out for name, out in names.items() if name in entries)
        leftovers = [e for e in entries if e.startswith(".")]
        for e in leftovers:
            if any(is_temp_of(e, out, os.path.splitext(out)[1]) for out in names.values()):
                try:
                    os.unlink(os.path.join(folder, e))
                except FileNotFoundError:
                    pass
    return present
