"""Giving freed heap memory back to the operating system.

glibc keeps memory freed by small and medium allocations in its heap for reuse, so after loading
(tensors stacked on the host, then copied to the device) or compiling (XLA's working memory) a
process can hold a hundred MB or more it no longer uses. `malloc_trim` returns it. Elsewhere than
glibc this does nothing.

    >>> release_free_memory() in (True, False)
    True
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _malloc_trim():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):  # not glibc
        return None


def release_free_memory() -> bool:
    """Return freed heap pages to the OS; True if the C library could."""
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False
