"""Process-wide speed settings."""

import sys

import pytest

from mambast import keep_freed_memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings")
def test_keep_freed_memory_applies_once_on_glibc():
    import platform
    first = keep_freed_memory()
    assert first == (platform.libc_ver()[0] == "glibc")
    assert keep_freed_memory() == first      # idempotent
