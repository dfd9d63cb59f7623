"""A bounded, thread-safe least-recently-used map for the TTP's per-worker caches.

A named cache counts its hits and misses in the TTP's metrics (ttp_cache_lookups).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable

from trusted_launch.ttp import metrics


class LRUCache:
    """At most ``size`` entries (0: keeps nothing); the least recently used goes first."""

    def __init__(self, size: int, name: str | None = None) -> None:
        self.size = size
        self.name = name
        self._entries: OrderedDict[Hashable, object] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> object | None:
        """The value of ``key`` (now most recently used), or None."""
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
        if self.name is not None and self.size > 0:
            metrics.cache_lookup(self.name, value is not None)
        return value

    def put(self, key: Hashable, value: object) -> None:
        """Store ``value``, evicting the least recently used entries beyond ``size``."""
        if self.size <= 0:
            return
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def get_or_make(self, key: Hashable, make: Callable[[], object]) -> object:
        """The cached value of ``key``, else ``make()``, stored unless it raised."""
        value = self.get(key)
        if value is None:
            value = make()
            self.put(key, value)
        return value

    def __len__(self) -> int:
        return len(self._entries)
