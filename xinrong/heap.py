"""Process-level heap settling for long-lived servers."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys

# glibc's mallopt parameter for the size from which malloc maps memory itself.
_M_MMAP_THRESHOLD = -3
# Allocations from this size are mmapped and go back to the OS when freed.
MMAP_THRESHOLD_BYTES = 256 * 1024


def fix_mmap_threshold(threshold: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Pin glibc's mmap threshold; returns whether it was set (False off glibc).

    glibc starts at 128 KiB and raises the threshold to the size of every
    mmapped block that is freed (up to 32 MiB). After a few multi-megabyte
    requests (a fuzz run: strings and bytes up to a few MB, refused at once)
    every later large buffer comes from the per-thread arenas instead, and an
    arena's freed top is kept: an agent grew 124 -> 373 MB over 23k fuzzed
    inputs and stayed there, though nothing was referenced (the same RPCs
    with 4x the inputs grew no further: high water, not a leak). A fixed
    threshold turns that off: large buffers are mapped and unmapped.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc (musl has no mallopt): nothing to pin
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, int(threshold)))


def settle_after_start() -> None:
    """Move everything built at start-up out of the cyclic garbage collector's reach.

    A server keeps its catalog, registry, keys, channels and caches for its
    whole life; a full collection would scan them all, again and again, and
    the request that happens to trigger it pays that pause in its latency.
    ``gc.freeze`` leaves them out of later collections (they are still
    freed normally by reference counting if dropped). The mmap threshold is
    pinned too (``fix_mmap_threshold``), so large request buffers do not
    leave the heap at its high-water mark.
    """
    fix_mmap_threshold()
    gc.collect()
    gc.freeze()
