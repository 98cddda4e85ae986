"""Folder-job planning: which (content, style) pairs to stylize, into which output files, and which to skip.

Pairs, output names, name clashes, resuming and the guard against writing into the inputs live here, so the
CLI and the Python API plan alike; nothing here runs a model or imports torch.
"""

from __future__ import annotations

import errno
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import JobError, why_missing

OUTPUT_SUFFIX = ".png"
IMAGE_OUTPUT_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
NAME_MAX = 255   # longest file name: 255 bytes on ext4, XFS, APFS; 255 UTF-16 units on NTFS


@dataclass(frozen=True)
class Job:
    """One content to stylize, its style (and `more_styles` mixed with it, or placed by a region mask: see
    `Stylizer.run`), and where to write the result (paths or strings)."""
    content: Path
    style: Path
    output: Path
    more_styles: tuple[Path, ...] = ()

    def __post_init__(self):
        for name in ("content", "style", "output"):
            object.__setattr__(self, name, Path(getattr(self, name)))
        object.__setattr__(self, "more_styles", tuple(Path(p) for p in self.more_styles))

    @property
    def styles(self) -> tuple[Path, ...]:
        return (self.style, *self.more_styles)


def output_name(content, style, suffix: str = OUTPUT_SUFFIX) -> str:
    """The file name of a result: <content>_stylized_<style>.png; style: a path, or several joined by '+'."""
    styles = [style] if isinstance(style, (str, Path)) else list(style)
    return f"{Path(content).stem}_stylized_{'+'.join(Path(s).stem for s in styles)}{suffix}"


def without_outputs(images: list[Path], made: set[Path]) -> list[Path]:
    """`images` less the files in `made` (resolved paths an earlier run wrote): an output folder that is also an
    input folder would otherwise feed a rerun its own earlier outputs."""
    return [p for p in images if p.resolve() not in made]


@dataclass
class JobPlan:
    """What a stylization of files will do: `jobs` to run, `present` outputs kept (resume), `refused` one-line
    reasons for pairs that cannot be written (with how many pairs each covers), outputs to a folder or not."""
    jobs: list[Job] = field(default_factory=list)
    present: list[Job] = field(default_factory=list)
    refused: list[tuple[str, int]] = field(default_factory=list)
    to_folder: bool = False

    @property
    def failed(self) -> int:
        return sum(n for _, n in self.refused)


def plan_jobs(content, style, output, overwrite: bool = False, other_inputs=()) -> JobPlan:
    """Plan stylizing CONTENT with STYLE (each an image file or a folder of images) into OUTPUT.

    With a folder among them (or OUTPUT an existing folder, or ending in a slash) every content is paired with
    every style into OUTPUT/<content>_stylized_<style>.png; outputs already there are kept unless overwrite
    (matched by name only); earlier outputs found in an input folder are not inputs. Otherwise OUTPUT is the one
    pair's file, always written. STYLE may also be a list of style files, all of them for each content (mixed,
    or placed by a region mask), named <content>_stylized_<style1>+<style2>.png in a folder. other_inputs: more
    files read by the run (a mask), never written over either. JobError for missing inputs, an output over an
    input, or a bad OUTPUT."""
    styles = [Path(style)] if isinstance(style, (str, Path)) else [Path(s) for s in style]
    try:
        return _plan(Path(content), styles, str(output), overwrite, [Path(p) for p in other_inputs])
    except OSError as e:   # a path the system refuses to look at (a name too long, no permission, ...)
        raise JobError(f"{e.filename or output}: {e.strerror or e}") from None


def _plan(content: Path, style: list[Path], output_arg: str, overwrite: bool, other_inputs: list[Path]) -> JobPlan:
    from ..io import list_images
    if not output_arg.strip():   # an unset shell variable, most likely: not the current folder
        raise JobError("output: empty name; give an image file or a folder")
    output = Path(output_arg)
    if not style:
        raise JobError("no style given")
    for name, p in [("content", content)] + [("style", s) for s in style]:
        if not p.exists():
            raise JobError(f"{p}: {why_missing(p, 'no such file or folder')} ({name})")
        if len(style) > 1 and name == "style" and p.is_dir():
            raise JobError(f"{p}: is a folder; several styles for one content must be image files")
    style_dir = len(style) == 1 and style[0].is_dir()
    contents = list_images(content) if content.is_dir() else [content]
    # the styles of each output: one per style file of a folder, or all the styles given for each content
    groups = [(s,) for s in list_images(style[0])] if style_dir else [tuple(style)]
    to_folder = content.is_dir() or style_dir or output.is_dir() or output_arg.endswith(("/", "\\"))
    if to_folder:
        if output.exists() and not output.is_dir():
            raise JobError(f"{output}: exists and is not a folder")
        made = {(output / output_name(c, g)).resolve() for c in contents for g in groups}
        contents = without_outputs(contents, made) if content.is_dir() else contents
        if style_dir:
            groups = [(s,) for s in without_outputs([g[0] for g in groups], made)]
    if not contents:
        raise JobError(f"{content}: folder has no images")
    if not groups:
        raise JobError(f"{style[0]}: folder has no images")
    if to_folder:
        jobs = [Job(c, g[0], output / output_name(c, g), g[1:]) for c in contents for g in groups]
    else:
        if output.suffix.lower() not in IMAGE_OUTPUT_SUFFIXES:
            raise JobError(f"{output}: output file needs an image suffix ({', '.join(IMAGE_OUTPUT_SUFFIXES)})")
        jobs = [Job(contents[0], groups[0][0], output, groups[0][1:])]
    styles = [s for g in groups for s in g]
    input_ids = {_file_id(p) for p in contents + styles + other_inputs} - {None}
    for job in jobs:   # by file identity: also a symlink, a hard link, another case on some file systems
        if _file_id(job.output) in input_ids:
            raise JobError(f"{job.output}: refusing to write over an input image")
    plan = JobPlan(to_folder=to_folder)
    by_output: dict[Path, list[Job]] = {}
    for job in jobs:
        by_output.setdefault(job.output, []).append(job)
    for out, same in by_output.items():
        if len(same) > 1:
            plan.refused.append((clash_message(out, [(j.content, j.styles) for j in same]), len(same)))
    for out, same in by_output.items():
        if len(same) > 1:
            continue
        job = same[0]
        try:
            present = _present(job.output)
        except OSError as e:   # a name too long for the file system
            if not to_folder:
                raise JobError(f"{output_arg}: cannot be written ({e.strerror})") from None
            plan.refused.append((unwritable_message(out, e.strerror), 1))
            continue
        if present and job.output.is_dir():   # not an earlier output: --overwrite could not replace it either
            plan.refused.append((f"{job.output}: is a folder where this output goes: skipped", 1))
            continue
        (plan.present if present and to_folder and not overwrite else plan.jobs).append(job)
    return plan


def clash_message(output, pairs) -> str:
    """Why pairs (content, style or styles) that would all be written to `output` are skipped, in one line."""
    names = " and ".join(f"{Path(c).name} + {' + '.join(Path(x).name for x in _as_list(s))}" for c, s in pairs)
    return f"{Path(output).name}: {names} would all be written there: skipped (rename one of the inputs)"


def _as_list(paths) -> list:
    return [paths] if isinstance(paths, (str, Path)) else list(paths)


def unwritable_message(output, reason: str) -> str:
    """Why an output whose name the file system refuses (too long) is skipped, in one line."""
    name = Path(output).name
    name = name if len(name) <= 60 else name[:60] + "..."
    return f"{name}: cannot be written ({reason}): skipped (shorten the input names)"


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def name_too_long(path) -> bool:
    """Whether a file name is longer than file systems take (`NAME_MAX`)."""
    name = os.path.basename(path)
    units = len(name.encode("utf-16-le")) // 2 if os.name == "nt" else len(os.fsencode(name))
    return units > NAME_MAX


def _present(path: Path) -> bool:
    """Whether an output exists; OSError (ENAMETOOLONG) if its name is too long to be one."""
    if name_too_long(path):
        raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), str(path))
    try:
        return path.exists()
    except OSError as e:
        raise JobError(f"{e.filename or path}: {e.strerror or e}") from None


def make_output_folders(jobs: list[Job]) -> list[Path]:
    """Create the jobs' output folders and make sure a file can be written there, before any image is
    stylized; returns the folders it created (for `remove_if_empty` after a run that wrote nothing)."""
    created: list[Path] = []
    for folder in dict.fromkeys(job.output.parent for job in jobs):
        try:
            if folder.exists() and not folder.is_dir():
                raise JobError(f"{folder}: exists and is not a folder (outputs go there)")
            missing = [p for p in (folder, *folder.parents) if not p.exists()][::-1]
            created += missing
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder):
                pass
        except (OSError, JobError) as e:
            remove_if_empty(created)
            if isinstance(e, JobError):
                raise
            raise JobError(f"{folder}: cannot write outputs there ({e.strerror or e})") from None
    return created


def remove_if_empty(folders: list[Path]) -> None:
    """Remove the folders `make_output_folders` created that stayed empty, deepest first."""
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:                # not empty (or gone): keep it
            pass
