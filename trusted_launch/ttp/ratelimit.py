"""A per-worker limit on failed attempts (wrong activation secrets) per (client, subject).

Failures are counted in a sliding window in this worker's memory only; the
key set is bounded (least recently used keys are forgotten), so a flood of
distinct keys cannot grow it. The durable record of failures is the
database's per-host counter and the log.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Hashable

from trusted_launch.ttp.lru import LRUCache

TRACKED_KEYS = 4096


class FailureLimiter:
    """At most ``limit`` failures per ``window`` seconds per key."""

    def __init__(self, limit: int, window: float, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window, self.clock = limit, window, clock
        self._failures = LRUCache(TRACKED_KEYS)
        self._lock = threading.Lock()

    def _recent(self, key: Hashable, now: float) -> deque:
        failures = self._failures.get_or_make(key, deque)
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        return failures  # type: ignore[return-value]

    def retry_after(self, key: Hashable) -> int:
        """Seconds until ``key`` may try again; 0 if it may now."""
        with self._lock:
            now = self.clock()
            failures = self._recent(key, now)
            if len(failures) < self.limit:
                return 0
            return max(1, int(failures[0] + self.window - now + 0.999))

    def failed(self, key: Hashable) -> None:
        """Count one failure of ``key``."""
        with self._lock:
            self._recent(key, self.clock()).append(self.clock())
