"""Payload allowlist, configuration and the never-block behaviour of AttestationNotifier.

The broker here is a real TCP server that accepts connections and never speaks
AMQP (a hung RabbitMQ), so the sender thread is provably stuck while the
launch side keeps calling. Delivery to a real RabbitMQ is in
tests/integration/test_notifications_rabbitmq.py.
"""

from __future__ import annotations

import logging
import os
import socket
import threading

import pytest
from oslo_config import cfg

from trusted_launch.compute.errors import AttestationRefused
from trusted_launch.compute.notifications import (
    ALLOWED_FIELDS,
    REFUSED_EVENT,
    SUCCESS_EVENT,
    AttestationNotifier,
    NotificationPayloadError,
    build_payload,
)
from trusted_launch.conf import compute as compute_conf
from trusted_launch.crypto._encoding import b64url_encode

INSTANCE = "6f1c1c43-5f53-4e4c-9a57-0d3f1c9b2a10"
SUCCESS = {"instance_uuid": INSTANCE, "host": "cmp1", "profile": "high",
           "attestation_id": "a-1", "steps_ms": {"certify": 12.5, "ttp": 40}}
REFUSED = {"instance_uuid": INSTANCE, "host": "cmp1", "profile": "high",
           "check": "profile_policy", "reason": "PCR 0 not allowed"}


@pytest.mark.parametrize("secret_key", ["nonce", "token", "image_key", "trusted_token"])
@pytest.mark.parametrize("event, fields", [(SUCCESS_EVENT, SUCCESS), (REFUSED_EVENT, REFUSED)])
def test_keys_outside_the_allowlist_are_refused(event, fields, secret_key):
    with pytest.raises(NotificationPayloadError, match=f"may not carry {secret_key}"):
        build_payload(event, {**fields, secret_key: "x"})


def test_payloads_are_exactly_the_allowlisted_fields():
    assert set(build_payload(SUCCESS_EVENT, SUCCESS)) == ALLOWED_FIELDS[SUCCESS_EVENT]
    assert build_payload(REFUSED_EVENT, REFUSED) == REFUSED
    assert build_payload(SUCCESS_EVENT, SUCCESS)["steps_ms"] == {"certify": 12.5, "ttp": 40.0}


def test_missing_fields_and_unknown_events_are_refused():
    with pytest.raises(NotificationPayloadError, match="lacks attestation_id"):
        build_payload(SUCCESS_EVENT, {k: v for k, v in SUCCESS.items() if k != "attestation_id"})
    with pytest.raises(NotificationPayloadError, match="unknown notification event"):
        build_payload("trusted_launch.attestation.other", REFUSED)


@pytest.mark.parametrize("field, value, problem", [
    ("instance_uuid", "not-a-uuid", "not a UUID"),
    ("host", "", "1-255 characters"),
    ("host", "a\nb", "non-printable"),
    ("profile", None, "1-255 characters"),
    ("steps_ms", {"Bad Name": 1}, "invalid step name"),
    ("steps_ms", {"ttp": -1}, "not a duration"),
    ("steps_ms", {"ttp": float("nan")}, "not a duration"),
    ("steps_ms", {"ttp": True}, "not a duration"),
    ("steps_ms", [1, 2], "must map"),
])
def test_malformed_success_values(field, value, problem):
    with pytest.raises(NotificationPayloadError, match=problem):
        build_payload(SUCCESS_EVENT, {**SUCCESS, field: value})


def test_check_must_be_a_check_name():
    with pytest.raises(NotificationPayloadError, match="check name"):
        build_payload(REFUSED_EVENT, {**REFUSED, "check": "Drop Table"})


def test_reason_is_stripped_of_encoded_blobs_and_bounded():
    nonce_b64 = b64url_encode(os.urandom(32))
    nonce_hex = os.urandom(32).hex()
    reason = f"bad token {nonce_b64} and digest {nonce_hex}; " + "x " * 1000
    payload = build_payload(REFUSED_EVENT, {**REFUSED, "reason": reason})
    assert nonce_b64 not in payload["reason"] and nonce_hex not in payload["reason"]
    assert payload["reason"].startswith("bad token [redacted] and digest [redacted]")
    assert len(payload["reason"]) == 1024


def test_options_are_registered_with_help():
    names = {opt.name: opt for opt in compute_conf.list_opts()[0][1]}
    assert names["notifications_enabled"].default is False
    assert names["notification_queue_size"].default > 0
    assert names["notifications_enabled"].help and names["notification_queue_size"].help


def test_disabled_in_nova_conf_sends_nothing_and_starts_no_thread():
    conf = cfg.ConfigOpts()
    conf([])
    before = threading.active_count()
    notifier = AttestationNotifier("rabbit://guest:guest@127.0.0.1:1/", conf)
    assert notifier.enabled is False
    assert notifier.attestation_refused(INSTANCE, "cmp1", "high", "ttp_unreachable", "x") is False
    assert threading.active_count() == before
    assert notifier.flush(0) is True
    notifier.close()


class HungBroker:
    """Accepts TCP connections and never answers: RabbitMQ that hangs."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connected = threading.Event()
        self.connections: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.connections.append(connection)
            self.connected.set()

    def stop(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for connection in self.connections:
            connection.close()
        self.thread.join(5)


@pytest.fixture
def hung_broker():
    broker = HungBroker()
    yield broker
    if broker.listener.fileno() != -1:
        broker.stop()


def test_full_queue_drops_counts_and_logs_once_while_the_broker_hangs(hung_broker, caplog):
    notifier = AttestationNotifier(f"rabbit://guest:guest@127.0.0.1:{hung_broker.port}/",
                                   queue_size=2, topics=["tl-unit"], send_retries=0)
    caplog.set_level(logging.WARNING)
    try:
        assert notifier.attestation_succeeded(INSTANCE, "cmp1", "high", "a-1", {"ttp": 1.0})
        assert hung_broker.connected.wait(10), "the sender never connected"
        results = [notifier.attestation_refused(INSTANCE, "cmp1", "high", "profile_policy",
                                                "PCR 0") for _ in range(6)]
        # The sender is still stuck on the first notification, yet every call returned.
        assert results == [True, True, False, False, False, False]
        assert notifier.stats_dict() == {"queued": 3, "sent": 0, "failed": 0, "dropped": 4,
                                         "rejected": 0}
        assert notifier.flush(0.01) is False
        drops = [r for r in caplog.records if "queue full" in r.getMessage()]
        assert len(drops) == 1
        hung_broker.stop()
        assert notifier.flush(30) is True
        assert notifier.stats_dict()["failed"] == 3
        outages = [r for r in caplog.records if "cannot send" in r.getMessage()]
        assert len(outages) == 1 and "message bus is unreachable" in outages[0].getMessage()
        # oslo.messaging's own per-message tracebacks (with the payload) are held back.
        assert not [r for r in caplog.records if r.name.startswith("oslo")]
    finally:
        notifier.close()


def test_invalid_payload_is_counted_not_raised(hung_broker):
    notifier = AttestationNotifier(f"rabbit://guest:guest@127.0.0.1:{hung_broker.port}/",
                                   topics=["tl-unit"], send_retries=0)
    try:
        assert notifier.attestation_refused("nope", "cmp1", "high", "x", "y") is False
        assert notifier.attestation_succeeded(INSTANCE, "cmp1", "high", "a", {"X": 1}) is False
        assert notifier.stats_dict()["rejected"] == 2
        assert notifier.stats_dict()["queued"] == 0
    finally:
        hung_broker.stop()
        notifier.close()


def test_refusal_from_a_launch_refused_error(hung_broker):
    error = AttestationRefused("bind_key_policy", "authPolicy is not PolicyPCR(replayed)")
    notifier = AttestationNotifier(f"rabbit://guest:guest@127.0.0.1:{hung_broker.port}/",
                                   topics=["tl-unit"], send_retries=0)
    try:
        assert notifier.attestation_refused(INSTANCE, "cmp1", "high", error.check, error.reason)
    finally:
        hung_broker.stop()
        notifier.close()
