"""Attestation outcome notifications over oslo.messaging, off the launch path.

:class:`AttestationNotifier` emits ``trusted_launch.attestation.success``
(INFO) and ``trusted_launch.attestation.refused`` (WARN) with the messagingv2
driver on the ``notifications`` topic, publisher ``trusted-launch.<host>``.

A launch never waits for the message bus: the public methods validate the
payload against an explicit per-event allowlist (no nonce, token or image key
can be added by mistake), put it on a bounded in-process queue and return. A
daemon thread sends. When the bus is down and the queue is full, new
notifications are dropped, counted in :attr:`AttestationNotifier.stats` and
logged once per outage. The message context is always empty, so no auth
token of the caller reaches the bus.
"""

from __future__ import annotations

import logging
import math
import queue
import re
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

import oslo_messaging
from oslo_config import cfg

from trusted_launch.conf import compute as compute_conf

LOG = logging.getLogger(__name__)

SUCCESS_EVENT = "trusted_launch.attestation.success"
REFUSED_EVENT = "trusted_launch.attestation.refused"
PUBLISHER_PREFIX = "trusted-launch"
DEFAULT_TOPICS = ("notifications",)
DRIVER = "messagingv2"

#: The only payload keys each event may carry.
ALLOWED_FIELDS: Mapping[str, frozenset[str]] = {
    SUCCESS_EVENT: frozenset({"instance_uuid", "host", "profile", "attestation_id", "steps_ms"}),
    REFUSED_EVENT: frozenset({"instance_uuid", "host", "profile", "check", "reason"}),
}
_PRIORITY = {SUCCESS_EVENT: "info", REFUSED_EVENT: "warn"}

MAX_TEXT = 255
MAX_REASON = 1024
MAX_STEPS = 16
_CHECK_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")
_STEP_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")
# A run this long could be an encoded secret (32 bytes are 43 base64url chars).
_OPAQUE_RUN_RE = re.compile(r"[A-Za-z0-9+/=_-]{43,}")
_STOP = object()
# oslo.messaging's loggers (oslo_log names its own "oslo.messaging...").
_OSLO_LOGGERS = ("oslo_messaging.notify.messaging", "oslo_messaging.notify.notifier",
                 "oslo_messaging._drivers.amqpdriver", "oslo.messaging._drivers.impl_rabbit",
                 "oslo.messaging._drivers.pool")


class NotificationPayloadError(ValueError):
    """A payload with a key outside the event's allowlist or a malformed value."""


def build_payload(event_type: str, fields: Mapping[str, object]) -> dict:
    """Validate ``fields`` for ``event_type``; return the normalised payload to send."""
    allowed = ALLOWED_FIELDS.get(event_type)
    if allowed is None:
        raise NotificationPayloadError(f"unknown notification event type {event_type!r}")
    extra = sorted(set(fields) - allowed)
    if extra:
        raise NotificationPayloadError(f"{event_type} payload may not carry {', '.join(extra)}")
    missing = sorted(allowed - set(fields))
    if missing:
        raise NotificationPayloadError(f"{event_type} payload lacks {', '.join(missing)}")
    return {name: _VALIDATORS[name](name, fields[name]) for name in sorted(allowed)}


def _instance_uuid(name: str, value: object) -> str:
    try:
        return str(uuid.UUID(_text(name, value)))
    except ValueError:
        raise NotificationPayloadError(f"'{name}' is not a UUID") from None


def _text(name: str, value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT:
        raise NotificationPayloadError(f"'{name}' must be a string of 1-{MAX_TEXT} characters")
    if not value.isprintable():
        raise NotificationPayloadError(f"'{name}' has non-printable characters")
    return value


def _check(name: str, value: object) -> str:
    if not isinstance(value, str) or not _CHECK_RE.fullmatch(value):
        raise NotificationPayloadError(f"'{name}' must be a lower-case check name")
    return value


def _reason(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise NotificationPayloadError(f"'{name}' must be a string")
    text = _OPAQUE_RUN_RE.sub("[redacted]", value)
    return text if len(text) <= MAX_REASON else text[:MAX_REASON - 3] + "..."


def _steps_ms(name: str, value: object) -> dict[str, float]:
    if not isinstance(value, Mapping) or len(value) > MAX_STEPS:
        raise NotificationPayloadError(f"'{name}' must map at most {MAX_STEPS} step names "
                                       "to milliseconds")
    steps = {}
    for step, millis in value.items():
        if not isinstance(step, str) or not _STEP_RE.fullmatch(step):
            raise NotificationPayloadError(f"'{name}' has an invalid step name")
        if (isinstance(millis, bool) or not isinstance(millis, int | float)
                or not math.isfinite(millis) or millis < 0):
            raise NotificationPayloadError(f"'{name}' step {step} is not a duration")
        steps[step] = round(float(millis), 3)
    return steps


_VALIDATORS = {"instance_uuid": _instance_uuid, "host": _text, "profile": _text,
               "attestation_id": _text, "check": _check, "reason": _reason,
               "steps_ms": _steps_ms}


@dataclass
class NotifierStats:
    """What happened to the notifications handed to one notifier."""

    queued: int = 0
    sent: int = 0
    failed: int = 0
    dropped: int = 0
    rejected: int = 0


@dataclass(frozen=True)
class _Notification:
    publisher_id: str
    priority: str
    event_type: str
    payload: dict


class _SenderLogFilter(logging.Filter):
    """Notes oslo.messaging send failures of the sender thread; keeps them out of the log.

    oslo.messaging logs (with a traceback per message) instead of raising when a
    notification cannot be sent; the notifier counts those and logs once itself.
    """

    def __init__(self) -> None:
        super().__init__()
        self.sender_ident: int | None = None
        self.failure: str | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        if record.thread != self.sender_ident or record.levelno < logging.WARNING:
            return True
        if record.name.startswith("oslo_messaging.notify"):
            cause = record.exc_info[1] if record.exc_info else None
            self.failure = str(cause)[:200] if cause else "send failed"
        return False


class AttestationNotifier:
    """Queue attestation outcomes and send them from a daemon thread.

    ``conf`` is nova.conf's ConfigOpts (``[trusted_launch] notifications_enabled``,
    ``notification_queue_size``; the transport URL as oslo.messaging reads it).
    Without ``conf``, a private ConfigOpts with the defaults is used and the
    notifier is enabled. ``transport_url`` overrides the configured URL. An
    invalid URL raises at construction (service start), never during a launch.
    """

    def __init__(self, transport_url: str | None = None, conf: cfg.ConfigOpts | None = None,
                 *, enabled: bool | None = None, queue_size: int | None = None,
                 topics: Iterable[str] = DEFAULT_TOPICS, send_retries: int = 1) -> None:
        options = self._options(conf)
        self.enabled = enabled if enabled is not None else (
            conf is None or options.notifications_enabled)
        self.stats = NotifierStats()
        self._lock = threading.Condition()
        self._pending = 0
        self._dropping = False
        self._bus_down = False
        self._sender: threading.Thread | None = None
        if self.enabled:
            self._queue: queue.Queue = queue.Queue(
                queue_size or options.notification_queue_size)
            self._transport = oslo_messaging.get_notification_transport(
                conf if conf is not None else cfg.ConfigOpts(), url=transport_url)
            self._notifier = oslo_messaging.Notifier(
                self._transport, publisher_id=PUBLISHER_PREFIX, driver=DRIVER,
                topics=list(topics), retry=send_retries)
            self._start_sender()

    def _start_sender(self) -> None:
        self._log_filter = _SenderLogFilter()
        for name in _OSLO_LOGGERS:
            logging.getLogger(name).addFilter(self._log_filter)
        self._sender = threading.Thread(target=self._run, name="trusted-launch-notifier",
                                        daemon=True)
        self._sender.start()
        self._log_filter.sender_ident = self._sender.ident

    @staticmethod
    def _options(conf: cfg.ConfigOpts | None):
        if conf is None:
            conf = cfg.ConfigOpts()
        compute_conf.register_opts(conf)
        return conf[compute_conf.GROUP]

    def attestation_succeeded(self, instance_uuid: str, host: str, profile: str,
                              attestation_id: str, steps_ms: Mapping[str, float]) -> bool:
        """Queue a success notification; True if queued. Never raises, never blocks."""
        return self._submit(SUCCESS_EVENT, {
            "instance_uuid": instance_uuid, "host": host, "profile": profile,
            "attestation_id": attestation_id, "steps_ms": steps_ms})

    def attestation_refused(self, instance_uuid: str, host: str, profile: str, check: str,
                            reason: str) -> bool:
        """Queue a refusal notification; True if queued. Never raises, never blocks."""
        return self._submit(REFUSED_EVENT, {
            "instance_uuid": instance_uuid, "host": host, "profile": profile,
            "check": check, "reason": reason})

    def flush(self, timeout: float) -> bool:
        """Wait until every queued notification was sent or given up; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._pending:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._lock.wait(remaining):
                    return self._pending == 0
            return True

    def close(self, timeout: float = 5.0) -> None:
        """Flush, stop the sender thread and release the transport."""
        if self._sender is None:
            return
        self.flush(timeout)
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            LOG.warning("notification sender still busy at shutdown")
        self._sender.join(timeout)
        for name in _OSLO_LOGGERS:
            logging.getLogger(name).removeFilter(self._log_filter)
        self._transport.cleanup()
        self._sender = None

    def _submit(self, event_type: str, fields: dict) -> bool:
        if not self.enabled or self._sender is None:
            return False
        try:
            payload = build_payload(event_type, fields)
        except NotificationPayloadError as exc:
            self._count("rejected")
            LOG.error("not sending %s notification: %s", event_type, exc)
            return False
        item = _Notification(f"{PUBLISHER_PREFIX}.{payload['host']}", _PRIORITY[event_type],
                             event_type, payload)
        return self._enqueue(item)

    def _enqueue(self, item: _Notification) -> bool:
        with self._lock:
            self._pending += 1
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self._finished()
            self._note_drop(item.event_type)
            return False
        with self._lock:
            self.stats.queued += 1
            self._dropping = False
        return True

    def _note_drop(self, event_type: str) -> None:
        with self._lock:
            self.stats.dropped += 1
            first, self._dropping = not self._dropping, True
        if first:
            LOG.warning("notification queue full (%d): dropping %s and further "
                        "notifications until the message bus takes them again",
                        self._queue.maxsize, event_type)

    def _count(self, counter: str) -> None:
        with self._lock:
            setattr(self.stats, counter, getattr(self.stats, counter) + 1)

    def _finished(self) -> None:
        with self._lock:
            self._pending -= 1
            self._lock.notify_all()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            try:
                self._send(item)
            except Exception:  # the sender thread must survive anything
                self._count("failed")
                LOG.exception("unexpected error sending %s notification", item.event_type)
            finally:
                self._finished()

    def _send(self, item: _Notification) -> None:
        self._log_filter.failure = None
        notifier = self._notifier.prepare(publisher_id=item.publisher_id)
        getattr(notifier, item.priority)({}, item.event_type, item.payload)
        failure = self._log_filter.failure
        with self._lock:
            was_down, self._bus_down = self._bus_down, failure is not None
            counter = "sent" if failure is None else "failed"
            setattr(self.stats, counter, getattr(self.stats, counter) + 1)
        if failure is None and was_down:
            LOG.info("notifications are being delivered again")
        elif failure is not None and not was_down:
            LOG.warning("cannot send %s notification (%s); dropping notifications while "
                        "the message bus is unreachable", item.event_type, failure)

    def stats_dict(self) -> dict[str, int]:
        """A consistent snapshot of the counters (for logs, status reports and tests)."""
        with self._lock:
            return asdict(self.stats)
