"""A small bounded map for caches of verified or checked things."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

# Bookkeeping a dict entry and its objects cost beyond the weighed bytes.
ENTRY_OVERHEAD_BYTES = 256


def digest_key(data: bytes) -> bytes:
    """A fixed-size cache key for caller-supplied bytes (SHA-256): a key never
    costs more than 32 bytes, however large the bytes it stands for."""
    return hashlib.sha256(data).digest()


class BoundedCache(Generic[K, V]):
    """A small thread-safe map that forgets its oldest entries: enough to
    keep hot consents verified (or claims checked) once without growing with
    an attacker's input. Callers put only what passed their checks.

    Bounded in entries and, with ``max_bytes``, in bytes: ``weigh(key,
    value)`` is what an entry holds (plus ``ENTRY_OVERHEAD_BYTES``). An entry
    count alone let 4,096 entries of up to 64 MiB each fill a node's memory.
    An entry heavier than the whole budget is not kept.
    """

    def __init__(
        self,
        capacity: int,
        *,
        max_bytes: int | None = None,
        weigh: Callable[[K, V], int] | None = None,
    ) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        if (max_bytes is None) != (weigh is None):
            raise ValueError("max_bytes and weigh go together")
        if max_bytes is not None and max_bytes <= 0:
            raise ValueError("max_bytes must be positive")
        self._capacity = capacity
        self._max_bytes = max_bytes
        self._weigh = weigh
        self._items: dict[K, tuple[V, int]] = {}
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        hit = self._items.get(key)
        return None if hit is None else hit[0]

    def put(self, key: K, value: V) -> None:
        weight = 0 if self._weigh is None else self._weigh(key, value) + ENTRY_OVERHEAD_BYTES
        if self._max_bytes is not None and weight > self._max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._items[key] = (value, weight)
            self._bytes += weight
            while len(self._items) > self._capacity or (self._max_bytes is not None and self._bytes > self._max_bytes):
                _, dropped = self._items.pop(next(iter(self._items)))
                self._bytes -= dropped

    @property
    def bytes(self) -> int:
        """Weighed bytes held (0 for a cache bounded in entries only)."""
        return self._bytes

    def held_keys(self) -> list[K]:
        with self._lock:
            return list(self._items)

    def __len__(self) -> int:
        return len(self._items)
