"""``trusted_launch.host.status`` notifications from the TTP, sent off the request path.

Emitted when a host's status changes: WARN when it drops (to a weaker profile
or to untrusted), INFO otherwise. The payload is exactly ``host``,
``profile`` (or null), ``previous_profile`` (or null), ``reason`` and
``time`` (unix seconds): no evidence, no nonce. Requests never wait for the
bus: payloads go on a bounded queue that a daemon thread (started on first
use, so after the server forked its workers) drains; a full queue drops and
counts. oslo.messaging is imported only when notifications are enabled (it
pulls in eventlet, which warns that it is deprecated on every import).
"""

from __future__ import annotations

import logging
import queue
import threading
import warnings
from collections.abc import Sequence
from types import ModuleType
from typing import TYPE_CHECKING

from oslo_config import cfg

if TYPE_CHECKING:
    import oslo_messaging

LOG = logging.getLogger(__name__)

EVENT_TYPE = "trusted_launch.host.status"
PUBLISHER_ID = "trusted-launch-ttp"
MAX_REASON = 1024
_STOP = object()


def import_messaging() -> ModuleType:
    """oslo.messaging, without eventlet's deprecation warning (it is not used here).

    oslo.messaging imports futurist and oslo.service, which import eventlet
    when it is installed (Nova needs it); eventlet then warns on import. The
    TTP never runs eventlet, so exactly that warning is silenced.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
        warnings.filterwarnings("ignore", message=r"eventletutils module is deprecated",
                                category=DeprecationWarning)
        import oslo_messaging
    return oslo_messaging


def messaging_options() -> list[tuple[str, list[cfg.Opt]]]:
    """oslo.messaging's options per group (its sections of ttp.conf)."""
    import_messaging()
    from oslo_messaging import opts
    return [(group or "DEFAULT", list(options)) for group, options in opts.list_opts()]


def status_payload(host: str, profile: str | None, previous: str | None, reason: str,
                   time: float) -> dict:
    """The notification payload (bounded reason, nothing else)."""
    text = reason if len(reason) <= MAX_REASON else reason[:MAX_REASON - 3] + "..."
    return {"host": host, "profile": profile, "previous_profile": previous,
            "reason": text, "time": float(time)}


class HostStatusNotifier:
    """Queue host status changes and send them from a daemon thread."""

    def __init__(self, transport_url: str | None, *, topics: Sequence[str] = ("notifications",),
                 queue_size: int = 1000, conf: cfg.ConfigOpts | None = None) -> None:
        self._messaging = import_messaging()  # at start-up: catch_warnings is process-wide
        self._url = transport_url
        self._topics = list(topics)
        self._conf = conf if conf is not None else cfg.ConfigOpts()
        self._queue: queue.Queue = queue.Queue(queue_size)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._notifier: oslo_messaging.Notifier | None = None
        self._transport = None
        self.dropped = 0
        self.sent = 0

    def host_status_changed(self, host: str, profile: str | None, previous: str | None,
                            reason: str, time: float, *, dropped: bool = True) -> bool:
        """Queue one change; True if queued. Never blocks, never raises."""
        item = ("warn" if dropped else "info",
                status_payload(host, profile, previous, reason, time))
        try:
            self._ensure_started()
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1
            LOG.warning("host status notification for %s dropped: queue full", host)
            return False
        except Exception as exc:  # e.g. a malformed transport URL
            self.dropped += 1
            LOG.error("host status notification for %s dropped: %s", host, exc)
            return False
        return True

    def _ensure_started(self) -> None:
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            oslo_messaging = self._messaging
            self._transport = oslo_messaging.get_notification_transport(self._conf,
                                                                        url=self._url)
            self._notifier = oslo_messaging.Notifier(
                self._transport, publisher_id=PUBLISHER_ID, driver="messagingv2",
                topics=self._topics, retry=1)
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name="host-status-notifier")
            self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            priority, payload = item
            try:
                getattr(self._notifier, priority)({}, EVENT_TYPE, payload)
                self.sent += 1
            except Exception:  # the sender must survive the bus
                LOG.exception("host status notification for %s not sent", payload["host"])

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued, stop the thread, release the transport."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is None:
            return
        self._queue.put(_STOP)
        thread.join(timeout)
        self._transport.cleanup()
