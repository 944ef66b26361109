"""Process-level heap settling for long-lived servers."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import sys
import threading
import time

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
    start_heap_probe_from_env()


# Debug only (``xinrong bench soak --heap-probe``): when set, this names a directory where a
# server writes, every ``HEAP_PROBE_SECONDS_ENV`` seconds, what grew since its first snapshot.
HEAP_PROBE_ENV = "XINRONG_HEAP_PROBE_DIR"
HEAP_PROBE_SECONDS_ENV = "XINRONG_HEAP_PROBE_SECONDS"


def _type_counts() -> dict[str, int]:
    counts: dict[str, int] = {}
    for obj in gc.get_objects():
        name = type(obj).__qualname__
        counts[name] = counts.get(name, 0) + 1
    return counts


def start_heap_probe(directory: str, every_seconds: float = 30.0, *, top: int = 25) -> threading.Thread:
    """Trace allocations and write, periodically, the top growth since the first snapshot.

    For finding what a long-lived server accumulates (a soak's rising RSS):
    ``tracemalloc`` size diffs by allocation site (6 frames) and object counts by
    type, one text file per process (``heap-<pid>.txt``, appended). Costs a lot of
    CPU while on: never in production, only when the environment variable says so.
    """
    import tracemalloc

    tracemalloc.start(6)
    out = os.path.join(directory, f"heap-{os.getpid()}.txt")

    def loop() -> None:
        time.sleep(every_seconds)
        base = tracemalloc.take_snapshot()
        base_counts = _type_counts()
        started = time.monotonic()
        while True:
            time.sleep(every_seconds)
            snap = tracemalloc.take_snapshot()
            counts = _type_counts()
            stats = snap.compare_to(base, "traceback")
            lines = [f"== t+{time.monotonic() - started:.0f}s traced {tracemalloc.get_traced_memory()[0] / 1e6:.1f} MB"]
            for stat in stats[:top]:
                lines.append(f"{stat.size_diff / 1024:+.1f} KiB {stat.count_diff:+d} blocks")
                lines.extend("    " + line for line in stat.traceback.format())
            grown = sorted(((counts.get(k, 0) - base_counts.get(k, 0), k) for k in counts), reverse=True)
            lines.append("-- object counts grown: " + ", ".join(f"{k} {d:+d}" for d, k in grown[:top] if d > 0))
            with open(out, "a") as fh:
                fh.write("\n".join(lines) + "\n")

    thread = threading.Thread(target=loop, name="heap-probe", daemon=True)
    thread.start()
    return thread


def start_heap_probe_from_env() -> bool:
    """Start ``start_heap_probe`` when ``HEAP_PROBE_ENV`` names a directory; whether it did."""
    directory = os.environ.get(HEAP_PROBE_ENV)
    if not directory:
        return False
    start_heap_probe(directory, float(os.environ.get(HEAP_PROBE_SECONDS_ENV) or 30.0))
    return True
