"""Write files so that a reader (or a crash) never leaves half of one: temp file in the same folder, then rename.

The one place that does this; checkpoints, weights, cached networks and images all go through it.
"""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path
from typing import Callable


_UMASK: list[int] = []
_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    """The process umask, read once (reading it means setting it, which is not safe while threads write)."""
    with _UMASK_LOCK:
        if not _UMASK:
            mask = os.umask(0o022)
            os.umask(mask)
            _UMASK.append(mask)
        return _UMASK[0]


def atomic_write(path, write: Callable[[str], object], suffix: str = ".part") -> Path:
    """Call write(temp_path), then rename the temp file to `path` (usual permissions, folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the temp name stays short whatever the file's name (a legal 255-byte name plus affixes would not be)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=_temp_prefix(path), suffix=suffix)
    try:   # from here on, also an interrupt removes the temp file
        os.close(fd)
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


_TEMP_NAME_CHARS = 8                                       # tempfile's random part: 8 characters
_TEMP_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")   # ... drawn from these


def _temp_prefix(path: Path) -> str:
    return f".{path.stem[:40]}."


def is_temp_of(name: str, path, suffix: str) -> bool:
    """Whether the file name `name` (in `path`'s folder) is a temp file `atomic_write(path, ..., suffix)` would
    make: one a killed process (SIGKILL, power loss) left behind, which a rerun may remove."""
    prefix = _temp_prefix(Path(path))
    middle = name[len(prefix):len(name) - len(suffix)]
    # exactly what mkstemp puts between prefix and suffix: 8 of [a-z0-9_] (a user's ".x.notes.png" is not one)
    return (name.startswith(prefix) and name.endswith(suffix) and len(middle) == _TEMP_NAME_CHARS
            and all(c in _TEMP_CHARS for c in middle))


def save_safetensors(tensors: dict, path, metadata: dict[str, str] | None = None) -> Path:
    """Atomically write a dict of tensors as safetensors (made contiguous)."""
    from safetensors.torch import save_file
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    return atomic_write(path, lambda p: save_file(tensors, p, metadata=metadata))
