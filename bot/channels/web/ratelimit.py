"""Token buckets per key (a conversation): a burst, then a sustained rate."""

from __future__ import annotations

import time
from dataclasses import dataclass

MAX_KEYS = 100_000


@dataclass
class _Bucket:
    tokens: float
    at: float


class RateLimiter:
    def __init__(self, rate_per_s: float, burst: int) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._buckets: dict[str, _Bucket] = {}

    def take(self, key: str, now: float | None = None) -> float:
        """0 if allowed (a token is spent), else the seconds to wait for the next token."""
        now = time.monotonic() if now is None else now
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= MAX_KEYS:
                self._forget_full(now)
            bucket = self._buckets[key] = _Bucket(float(self.burst), now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate_per_s)
        bucket.at = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / self.rate_per_s

    def _forget_full(self, now: float) -> None:
        for key in [
            k
            for k, b in self._buckets.items()
            if b.tokens + (now - b.at) * self.rate_per_s >= self.burst
        ]:
            del self._buckets[key]
