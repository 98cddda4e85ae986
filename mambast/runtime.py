"""Process-wide settings that make CPU inference faster. The `mambast` command applies them; library users
may call them once at start-up (they change the whole process, so the library never does it by itself).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD, _M_TOP_PAD = -1, -2     # glibc mallopt parameters (malloc.h)
_INT_MAX = 2 ** 31 - 1                     # mallopt takes a C int
_applied: bool | None = None


def keep_freed_memory(top_pad: int = 512 << 20, trim_threshold: int = _INT_MAX) -> bool:
    """Ask glibc's malloc to keep freed memory for reuse instead of handing it back to the kernel.

    A 512 x 512 stylization allocates and frees about 1.4 GB of activations; with glibc's defaults the
    freed blocks go back to the kernel and every image faults them in again. Measured on a 2-core x86-64
    machine (glibc 2.36, torch 2.13, float32): 372,000 minor page faults and 2.40 s per image without,
    16,000 and 1.99 s with these settings. The cost: the process keeps the memory of its peak until it
    exits. Returns True if applied (Linux with glibc), False elsewhere; calling it again does nothing.
    """
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            mallopt = libc.mallopt
        except (OSError, AttributeError):   # not glibc (e.g. musl has no mallopt)
            return False
        mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        top_pad, trim_threshold = (max(0, min(int(v), _INT_MAX)) for v in (top_pad, trim_threshold))
        _applied = bool(mallopt(_M_TOP_PAD, top_pad)) and bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold))
    return _applied
