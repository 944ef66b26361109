"""Rate limits per institution and per method: token buckets in memory.

A bucket holds at most ``burst`` tokens and refills at ``rate`` per second;
a call takes one token or is refused with RESOURCE_EXHAUSTED
``QUOTA_EXHAUSTED`` and a ``google.rpc.RetryInfo`` saying when the next
token is there. Which limit applies: ``QuotasConfig`` (node config) and the
institution's overrides from the registry, most specific first
(``xinrong.node.config.QuotasConfig``).

Across replicas (PostgreSQL) each replica keeps its own buckets and
enforces ``rate / replicas`` and ``burst / replicas`` (at least one token),
``replicas`` being ``[quotas].replicas`` or, by default, the replicas whose
heartbeat (``node_replicas``, every second) is fresh:
a bucket in the database would cost a round trip per call on the event
loop, where every other per-call check answers from memory. The platform-wide
limit then holds when calls are spread across replicas (a balancer's
round robin); one replica alone lets through only its share.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from xinrong.errors import Reason, XinrongError
from xinrong.node.config import QuotasConfig


@dataclass(frozen=True)
class Limit:
    rate: float
    burst: float


class QuotaExceeded(XinrongError):
    default_reason = Reason.QUOTA_EXHAUSTED

    def __init__(self, detail: str, retry_after: float) -> None:
        super().__init__(detail)
        self.retry_after = max(0.001, retry_after)


class TokenBucket:
    """One bucket; not thread-safe by itself (``QuotaBook`` locks)."""

    __slots__ = ("last", "limit", "tokens")

    def __init__(self, limit: Limit, now: float) -> None:
        self.limit = limit
        self.tokens = limit.burst
        self.last = now

    def take(self, now: float) -> float:
        """Take one token: 0.0 if taken, else the seconds until one is there."""
        elapsed = max(0.0, now - self.last)
        self.tokens = min(self.limit.burst, self.tokens + elapsed * self.limit.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.limit.rate


Overrides = Mapping[str, Limit]


def parse_overrides(raw: Mapping[str, object]) -> dict[str, Limit]:
    """Registry overrides (JSON ``{"Verify": {"rate": 1, "burst": 2}}``) as limits; malformed entries skipped."""
    out: dict[str, Limit] = {}
    for method, value in raw.items():
        if not isinstance(value, Mapping):
            continue
        rate, burst = value.get("rate"), value.get("burst")
        if isinstance(rate, (int, float)) and isinstance(burst, (int, float)) and rate > 0 and burst >= 1:
            out[str(method)] = Limit(float(rate), float(burst))
    return out


class QuotaBook:
    """Every bucket of this replica, keyed by (institution, method)."""

    def __init__(self, config: QuotasConfig, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._config = config
        self._clock = clock
        # The config's tables as limits, once (the per-call path only looks up).
        self._by_institution = {i: _limits(t) for i, t in config.institutions.items()}
        self._by_type = {k: _limits(t) for k, t in config.types.items()}
        self._none: dict[str, Limit] = {}
        self._lock = threading.Lock()
        self._buckets: dict[tuple[str, str], TokenBucket] = {}
        self.refused = 0
        # Live replicas sharing the limits (``set_live_replicas``), unless the config fixes it.
        self._live = 1

    @property
    def replicas(self) -> int:
        return self._config.replicas or self._live

    def set_live_replicas(self, count: int) -> None:
        """The number of live replicas (from their heartbeats); buckets adopt the new share at their next call."""
        self._live = max(1, count)

    def limit_for(self, institution: str, kind: str, method: str, overrides: Overrides) -> Limit | None:
        """The limit this replica enforces, or None (no limit)."""
        chosen: Limit | None = None
        for table in (
            overrides,
            self._by_institution.get(institution, self._none),
            self._by_type.get(kind, self._none),
        ):
            chosen = table.get(method) or table.get("*")
            if chosen is not None:
                break
        if chosen is None:
            return None
        replicas = self.replicas
        return Limit(chosen.rate / replicas, max(1.0, math.floor(chosen.burst / replicas)))

    def take(self, institution: str, kind: str, method: str, overrides: Overrides = {}) -> None:  # noqa: B006
        """One call of ``method`` by ``institution``; raises ``QuotaExceeded`` (with retry_after) if over."""
        limit = self.limit_for(institution, kind, method, overrides)
        if limit is None:
            return
        key = (institution, method)
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = TokenBucket(limit, now)
            elif bucket.limit != limit:
                # A new share or override: the tokens already used stay used (a smaller bucket
                # gives no fresh burst, a larger one adds only its extra room).
                grown = max(0.0, limit.burst - bucket.limit.burst)
                bucket.limit = limit
                bucket.tokens = min(bucket.tokens + grown, limit.burst)
            wait = bucket.take(now)
            if wait > 0:
                self.refused += 1
        if wait > 0:
            raise QuotaExceeded(f"{institution} over its {method} limit of {limit.rate:g}/s", wait)


def _limits(table: Mapping[str, object]) -> dict[str, Limit]:
    out: dict[str, Limit] = {}
    for method, value in table.items():
        rate = getattr(value, "rate", None)
        burst = getattr(value, "burst", None)
        if rate is not None and burst is not None:
            out[method] = Limit(float(rate), float(burst))
    return out


__all__ = ["Limit", "QuotaBook", "QuotaExceeded", "TokenBucket", "parse_overrides"]
