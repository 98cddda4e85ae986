"""Error types shown to users as one line (the CLI prints them without a traceback).

Also the one-line texts of running out of memory or disk space; nothing here imports torch.
"""

import errno
import os


class MambastError(Exception):
    """Base of every user-facing error of mambast."""


class ImageError(MambastError, ValueError):
    """An input image that cannot be used (missing, not an image, truncated, too large, ...)."""


class WeightsError(MambastError, ValueError):
    """A checkpoint that cannot be used: unreadable, unsafe, or not matching the model."""


class VideoError(MambastError, ValueError):
    """A video that cannot be stylized or written (not a video, truncated, no frames, unknown codec, ...)."""


class FetchError(MambastError, RuntimeError):
    """A pretrained network could not be downloaded, extracted or verified."""


def one_line(e: BaseException) -> str:
    """The first non-blank line of an exception's message, else its type's name (some messages are empty)."""
    return next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)


def printable(text: str) -> str:
    """`text` with control characters (newlines in file names, terminal escapes) written as escapes: one line."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def why_missing(path, missing: str = "no such file") -> str:
    """Why a path that `Path.exists()` calls absent cannot be read: `missing`, or a symbolic-link loop (os.stat
    says ELOOP, which exists() hides; "no such file" would send the user looking for a file that is there)."""
    try:
        os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "symbolic-link loop (the link leads back to itself)"
    except ValueError:   # a NUL byte in the name
        pass
    return missing


def _out_of_memory(e: BaseException) -> bool:
    """torch's CUDA OutOfMemoryError, Python's MemoryError, or the RuntimeError of torch's CPU allocator."""
    return (isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError"
            or (isinstance(e, RuntimeError) and "can't allocate memory" in str(e)))


DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})   # no space, over quota, file too large


def resource_error(e: BaseException) -> str | None:
    """A one-line message saying what to do for running out of memory or disk space, None for other errors."""
    if _out_of_memory(e):
        return "out of memory: try a smaller --batch-size, or a smaller --size (stylize) or --crop (train)"
    if isinstance(e, OSError) and e.errno in DISK_FULL:
        return f"{e.filename or 'a file'}: {e.strerror}: free some space (files already written are complete)"
    return None


# a path the user named that cannot be used as asked: the file name and the reason are the whole message
_PATH_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.EEXIST, errno.EISDIR, errno.ENOTDIR,
                          errno.ENOENT, errno.ENAMETOOLONG, errno.ELOOP})


def path_error(e: BaseException) -> str | None:
    """'FILE: reason' for an OSError on a named path that cannot be read or written as asked (permissions, a
    read-only disk, a folder where a file goes, ...); None for other errors."""
    if isinstance(e, OSError) and e.errno in _PATH_ERRNOS and e.filename is not None:
        target = f" -> {e.filename2}" if e.filename2 is not None else ""
        return f"{e.filename}{target}: {e.strerror}"
    return None


class JobError(MambastError, ValueError):
    """Inputs and outputs of a stylization that cannot be planned (missing input, output over an input, ...)."""
