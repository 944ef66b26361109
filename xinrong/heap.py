"""Process-level heap settling for long-lived servers."""

from __future__ import annotations

import contextlib
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
# "0": native figures only, no tracemalloc (the servers keep their speed).
HEAP_PROBE_TRACE_ENV = "XINRONG_HEAP_PROBE_TRACE"


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks")
    ] + [("keepcost", ctypes.c_size_t)]


def native_memory() -> dict[str, float]:
    """MB: resident anonymous / file / shared memory, glibc heap in use and free, SQLite's own allocations.

    tracemalloc sees Python's allocations only; SQLite, gRPC core and protobuf
    allocate with malloc directly. These tell a Python leak from a native one,
    and live native memory (malloc in use) from a fragmented heap (free).
    """
    out: dict[str, float] = {}
    with contextlib.suppress(OSError), open("/proc/self/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("RssAnon", "RssFile", "RssShmem"):
                out[key] = round(int(value.split()[0]) / 1024, 1)
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        info = libc.mallinfo2()
        out["malloc_in_use"] = round((info.uordblks + info.hblkhd) / 1e6, 1)
        out["malloc_free"] = round(info.fordblks / 1e6, 1)
    with contextlib.suppress(OSError, AttributeError):
        sqlite = ctypes.CDLL(ctypes.util.find_library("sqlite3") or "libsqlite3.so.0")
        sqlite.sqlite3_memory_used.restype = ctypes.c_int64
        out["sqlite"] = round(sqlite.sqlite3_memory_used() / 1e6, 1)
    return out


def _type_counts() -> dict[str, int]:
    counts: dict[str, int] = {}
    for obj in gc.get_objects():
        name = type(obj).__qualname__
        counts[name] = counts.get(name, 0) + 1
    return counts


def start_heap_probe(
    directory: str, every_seconds: float = 30.0, *, top: int = 25, trace: bool = True
) -> threading.Thread:
    """Write, periodically, what the heap grew by since the first snapshot.

    For finding what a long-lived server accumulates (a soak's rising RSS), one
    text file per process (``heap-<pid>.txt``, appended): ``native_memory``
    each time; with ``trace``, also ``tracemalloc`` size diffs by allocation site
    (6 frames) and object counts by type, which cost a lot of CPU. Never in
    production, only when the environment variable says so.
    """
    import tracemalloc

    if trace:
        tracemalloc.start(6)
    out = os.path.join(directory, f"heap-{os.getpid()}.txt")

    def loop() -> None:
        time.sleep(every_seconds)
        base = tracemalloc.take_snapshot() if trace else None
        base_counts = _type_counts() if trace else {}
        started = time.monotonic()
        while True:
            time.sleep(every_seconds)
            traced = tracemalloc.get_traced_memory()[0] / 1e6
            lines = [f"== t+{time.monotonic() - started:.0f}s traced {traced:.1f} MB native {native_memory()}"]
            if base is not None:
                stats = tracemalloc.take_snapshot().compare_to(base, "traceback")
                counts = _type_counts()
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
    every = float(os.environ.get(HEAP_PROBE_SECONDS_ENV) or 30.0)
    start_heap_probe(directory, every, trace=os.environ.get(HEAP_PROBE_TRACE_ENV, "1") != "0")
    return True
