"""What the scheduler knows of each host's current trust status, kept off the filter path.

:class:`HostTrustStatus` holds ``{host: HostTrust(profile or None, rank, as_of)}``
in a dict that is replaced, never mutated, so the filter reads it without a
lock: one ``dict.get`` per host. Background threads feed it:

* an oslo.messaging notification listener for ``trusted_launch.host.status``
  (sent by the TTP whenever a host's status changes);
* optionally a periodic pull of ``GET /v1/hosts?status=1`` from the TTP, the
  fallback for lost notifications and for a scheduler that just started.

Newer information wins (``as_of`` is the TTP's time of the judgement).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

LOG = logging.getLogger(__name__)

EVENT_TYPE = "trusted_launch.host.status"
UNKNOWN_RANK = -1  # a profile name the scheduler does not know: weaker than all


@dataclass(frozen=True)
class HostTrust:
    """A host's status: strongest profile met (None: untrusted), its rank, when judged."""

    profile: str | None
    rank: int | None
    as_of: float


class HostTrustStatus:
    """Host trust statuses, read lock-free by the filter and fed from background threads."""

    def __init__(self, rank_of: Callable[[str], int | None]) -> None:
        self._rank_of = rank_of
        self._entries: dict[str, HostTrust] = {}
        self._lock = threading.Lock()
        self.updated = threading.Condition(self._lock)
        self.received = 0

    def snapshot(self) -> Mapping[str, HostTrust]:
        """The current statuses; never changes afterwards (updates replace the dict)."""
        return self._entries

    def get(self, host: str) -> HostTrust | None:
        return self._entries.get(host)

    def update(self, host: str, profile: str | None, as_of: float) -> bool:
        """Record a status unless an equally new or newer one is known; True if recorded."""
        rank = None if profile is None else self._rank(profile)
        return self.update_many([(host, HostTrust(profile, rank, as_of))]) > 0

    def _rank(self, profile: str) -> int:
        rank = self._rank_of(profile)
        return UNKNOWN_RANK if rank is None else rank

    def update_many(self, items: Iterable[tuple[str, HostTrust]]) -> int:
        """Record several statuses at once (one copy of the dict); how many were newer."""
        with self._lock:
            entries = dict(self._entries)
            changed = 0
            for host, trust in items:
                known = entries.get(host)
                if known is None or trust.as_of > known.as_of:
                    entries[host] = trust
                    changed += 1
            if changed:
                self._entries = entries
                self.received += changed
                self.updated.notify_all()
            return changed

    def wait_for(self, predicate: Callable[[Mapping[str, HostTrust]], bool],
                 timeout: float) -> bool:
        """Wait until ``predicate(snapshot)`` holds (tests, tools); False on timeout."""
        with self._lock:
            return self.updated.wait_for(lambda: predicate(self._entries), timeout)

    # feeding ------------------------------------------------------------------

    def apply_notification(self, payload: object) -> bool:
        """Record a ``trusted_launch.host.status`` payload; malformed ones are ignored."""
        if not isinstance(payload, Mapping):
            return False
        host, profile, when = payload.get("host"), payload.get("profile"), payload.get("time")
        if not isinstance(host, str) or not host or not _is_time(when):
            LOG.warning("ignoring malformed %s notification", EVENT_TYPE)
            return False
        if profile is not None and not isinstance(profile, str):
            return False
        return self.update(host, profile, float(when))

    def apply_listing(self, listing: object) -> int:
        """Record a ``GET /v1/hosts?status=1`` answer; how many entries were newer."""
        hosts = listing.get("hosts") if isinstance(listing, Mapping) else None
        if not isinstance(hosts, list):
            raise ValueError("TTP host status listing has no 'hosts' list")
        items = []
        for item in hosts:
            if not isinstance(item, Mapping):
                continue
            host, profile, when = item.get("host"), item.get("profile"), item.get("checked_at")
            if isinstance(host, str) and _is_time(when) and (
                    profile is None or isinstance(profile, str)):
                rank = None if profile is None else self._rank(profile)
                items.append((host, HostTrust(profile, rank, float(when))))
        return self.update_many(items)


def _is_time(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0


class _Endpoint:
    """oslo.messaging notification endpoint for trusted_launch.host.status."""

    def __init__(self, status: HostTrustStatus) -> None:
        import oslo_messaging
        self.status = status
        self.filter_rule = oslo_messaging.NotificationFilter(
            event_type=r"^trusted_launch\.host\.status$")

    def _handle(self, ctxt, publisher_id, event_type, payload, metadata):
        self.status.apply_notification(payload)

    info = warn = error = _handle


class StatusFeed:
    """The background threads feeding one :class:`HostTrustStatus` (one set per process)."""

    def __init__(self, status: HostTrustStatus, *, transport_url: str | None = None,
                 topics: Iterable[str] = ("notifications",), pool: str | None = None,
                 pull: Callable[[], object] | None = None, pull_interval: float = 60.0,
                 conf: Any = None) -> None:
        self.status = status
        self._transport_url = transport_url
        self._topics = list(topics)
        self._pool = pool
        self._pull = pull
        self._pull_interval = pull_interval
        self._conf = conf
        self._listener = None
        self._transport = None
        self._stop = threading.Event()
        self._puller: threading.Thread | None = None
        self.listening = threading.Event()
        self.pid = os.getpid()

    def start(self) -> None:
        """Start the listener (if a transport is configured) and the puller (if any).

        Both start in background threads: a message bus that is down must
        never hold up the caller (the filter starts the feed lazily).
        """
        if self._transport_url is not None or self._conf is not None:
            threading.Thread(target=self._listen_until_started, daemon=True,
                             name="trusted-launch-host-status-listen").start()
        if self._pull is not None:
            self._puller = threading.Thread(target=self._pull_loop, daemon=True,
                                            name="trusted-launch-host-status-pull")
            self._puller.start()

    def _listen_until_started(self, retry_s: float = 10.0) -> None:
        while not self._stop.is_set():
            try:
                self._start_listener()
                self.listening.set()
                if self._stop.is_set():  # stopped while we were connecting
                    self._stop_listener()
                return
            except Exception as exc:  # an unreachable or misconfigured bus
                LOG.warning("host status listener not started (%s); retrying in %g s",
                            exc, retry_s)
                self._stop.wait(retry_s)

    def _start_listener(self) -> None:
        import oslo_messaging
        from oslo_config import cfg

        conf = self._conf if self._conf is not None else cfg.ConfigOpts()
        self._transport = oslo_messaging.get_notification_transport(conf,
                                                                    url=self._transport_url)
        targets = [oslo_messaging.Target(topic=topic) for topic in self._topics]
        self._listener = oslo_messaging.get_notification_listener(
            self._transport, targets, [_Endpoint(self.status)], executor="threading",
            pool=self._pool)
        self._listener.start()

    def _pull_loop(self) -> None:
        while not self._stop.is_set():
            self.pull_once()
            self._stop.wait(self._pull_interval)

    def pull_once(self) -> int:
        """One pull from the TTP; how many statuses were newer (0 on failure, logged)."""
        try:
            return self.status.apply_listing(self._pull())
        except Exception as exc:  # the thread must survive a TTP outage
            LOG.warning("host status pull failed: %s", exc)
            return 0

    def stop(self) -> None:
        """Stop both threads and release the transport."""
        self._stop.set()
        self._stop_listener()
        if self._puller is not None:
            self._puller.join(5)

    def _stop_listener(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.stop()
            listener.wait()
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.cleanup()


def ttp_status_pull(url: str, *, ca_file: str | None = None, timeout: float = 10.0,
                    auth_token: str | None = None) -> Callable[[], object]:
    """A callable that GETs ``{url}/v1/hosts?status=1`` over HTTPS (certificate verified).

    ``auth_token``: a TTP API token of role reader, sent as X-Auth-Token.
    """
    import requests

    session = requests.Session()
    if auth_token:
        session.headers["X-Auth-Token"] = auth_token
    endpoint = url.rstrip("/") + "/v1/hosts"

    def pull() -> object:
        answer = session.get(endpoint, params={"status": "1"}, timeout=timeout,
                             verify=ca_file if ca_file else True)
        answer.raise_for_status()
        return answer.json()
    return pull
