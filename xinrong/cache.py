"""A small bounded map for caches of verified or checked things."""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class BoundedCache(Generic[K, V]):
    """A small thread-safe map that forgets its oldest entries: enough to
    keep hot consents verified (or claims checked) once without growing with
    an attacker's input. Callers put only what passed their checks."""

    def __init__(self, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self._capacity = capacity
        self._items: dict[K, V] = {}
        self._lock = threading.Lock()

    def get(self, key: K) -> V | None:
        return self._items.get(key)

    def put(self, key: K, value: V) -> None:
        with self._lock:
            self._items[key] = value
            while len(self._items) > self._capacity:
                self._items.pop(next(iter(self._items)))

    def __len__(self) -> int:
        return len(self._items)
