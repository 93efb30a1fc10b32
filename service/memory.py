"""Give memory back to the operating system when the service goes idle (torch-free; glibc only).

Why: a live stream decodes ~0.7 MB frames and aligns crops in worker threads for as long as it runs. glibc's malloc
keeps freed memory in its arenas (one per thread that allocated, plus a raised mmap threshold after large frees), so
after a burst of streams the process's resident size stays tens of MiB above its idle size although nothing is held.
`release_memory()` runs a full garbage collection (per-stream objects that lived long enough to reach the oldest
generation are otherwise only collected at the next full collection, which an idle server never triggers) and then
`malloc_trim(0)`, which returns the free pages of every arena. The stream endpoint calls it once the last stream has
been closed for `IDLE_RELEASE_S` seconds.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import logging

log = logging.getLogger(__name__)

IDLE_RELEASE_S = 2.0  # seconds without any open stream before memory is given back


@functools.cache
def _malloc_trim():
    """glibc's malloc_trim, or None (musl, macOS, Windows: nothing to trim the same way)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_memory() -> bool:
    """Collect garbage, then return free heap pages to the OS. True when malloc_trim ran (glibc)."""
    gc.collect()
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
