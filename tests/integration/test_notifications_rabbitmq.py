"""AttestationNotifier against the real RabbitMQ on 127.0.0.1:5672 (guest/guest).

An oslo.messaging notification listener on a unique topic receives what the
notifier sends; its queues are deleted afterwards.
"""

from __future__ import annotations

import os
import threading
import uuid

import kombu
import oslo_messaging
import pytest
from oslo_config import cfg

from trusted_launch.compute.errors import TTPUnreachable
from trusted_launch.compute.notifications import (
    REFUSED_EVENT,
    SUCCESS_EVENT,
    AttestationNotifier,
)
from trusted_launch.crypto._encoding import b64url_encode
from trusted_launch.sandbox.services import rabbitmq_reachable

pytestmark = pytest.mark.rabbitmq

RABBIT_URL = "rabbit://guest:guest@127.0.0.1:5672/"
INSTANCE = str(uuid.uuid4())



needs_rabbitmq = pytest.mark.skipif(not rabbitmq_reachable(),
                                    reason="RabbitMQ is not listening on 127.0.0.1:5672")


class Collector:
    """Notification endpoint recording (priority, publisher, event, payload)."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str, str, dict]] = []
        self.arrived = threading.Condition()

    def _record(self, priority, publisher_id, event_type, payload):
        with self.arrived:
            self.received.append((priority, publisher_id, event_type, payload))
            self.arrived.notify_all()
        return oslo_messaging.NotificationResult.HANDLED

    def info(self, ctxt, publisher_id, event_type, payload, metadata):
        return self._record("INFO", publisher_id, event_type, payload)

    def warn(self, ctxt, publisher_id, event_type, payload, metadata):
        return self._record("WARN", publisher_id, event_type, payload)

    def wait_for(self, count: int, timeout: float = 20) -> list:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.received) >= count, timeout)
            return list(self.received)


@pytest.fixture
def listener():
    """(topic, collector) with a listener running on a fresh topic."""
    topic = f"tl-test-{uuid.uuid4().hex[:12]}"
    collector = Collector()
    transport = oslo_messaging.get_notification_transport(cfg.ConfigOpts(), url=RABBIT_URL)
    server = oslo_messaging.get_notification_listener(
        transport, [oslo_messaging.Target(topic=topic)], [collector], executor="threading")
    server.start()
    yield topic, collector
    server.stop()
    server.wait()
    transport.cleanup()
    with kombu.Connection("amqp://guest:guest@127.0.0.1:5672//") as connection:
        channel = connection.channel()
        for priority in ("info", "warn"):
            channel.queue_delete(f"{topic}.{priority}")


@needs_rabbitmq
def test_both_events_arrive_with_allowlisted_payloads(listener):
    topic, collector = listener
    nonce = os.urandom(32)
    notifier = AttestationNotifier(RABBIT_URL, topics=[topic])
    try:
        assert notifier.attestation_succeeded(INSTANCE, "cmp1", "high", "att-1",
                                              {"bind_key": 0.8, "certify": 31.25, "ttp": 52})
        assert notifier.attestation_refused(
            INSTANCE, "cmp2", "medium", "profile_policy",
            f"PCR 7 differs (token {b64url_encode(nonce)})")
        assert notifier.flush(20)
    finally:
        notifier.close()
    received = sorted(collector.wait_for(2), key=lambda item: item[2])
    assert [item[:3] for item in received] == [
        ("WARN", "trusted-launch.cmp2", REFUSED_EVENT),
        ("INFO", "trusted-launch.cmp1", SUCCESS_EVENT)]
    assert received[1][3] == {"instance_uuid": INSTANCE, "host": "cmp1", "profile": "high",
                              "attestation_id": "att-1",
                              "steps_ms": {"bind_key": 0.8, "certify": 31.25, "ttp": 52.0}}
    assert received[0][3] == {"instance_uuid": INSTANCE, "host": "cmp2", "profile": "medium",
                              "check": "profile_policy",
                              "reason": "PCR 7 differs (token [redacted])"}
    wire = repr(received)
    assert nonce.hex() not in wire and b64url_encode(nonce) not in wire
    assert notifier.stats_dict()["sent"] == 2 and notifier.stats_dict()["failed"] == 0


def _nova_conf(tmp_path, text: str) -> cfg.ConfigOpts:
    path = tmp_path / "nova.conf"
    path.write_text(text)
    conf = cfg.ConfigOpts()
    conf([], default_config_files=[str(path)])
    return conf


@needs_rabbitmq
def test_transport_url_and_switch_come_from_nova_conf(listener, tmp_path):
    topic, collector = listener
    conf = _nova_conf(tmp_path, f"[DEFAULT]\ntransport_url = {RABBIT_URL}\n"
                                "[trusted_launch]\nnotifications_enabled = true\n")
    notifier = AttestationNotifier(conf=conf, topics=[topic])
    try:
        assert notifier.attestation_refused(INSTANCE, "cmp3", "high", "ttp_unreachable",
                                            "no answer")
        assert notifier.flush(20)
    finally:
        notifier.close()
    received = collector.wait_for(1)
    assert [(item[1], item[3]["check"]) for item in received] == [
        ("trusted-launch.cmp3", "ttp_unreachable")]


def test_notifications_section_overrides_default_transport(tmp_path):
    """[oslo_messaging_notifications] transport_url wins over [DEFAULT] (here: a dead port)."""
    conf = _nova_conf(tmp_path, f"[DEFAULT]\ntransport_url = {RABBIT_URL}\n"
                                "[oslo_messaging_notifications]\n"
                                "transport_url = rabbit://guest:guest@127.0.0.1:1/\n"
                                "[trusted_launch]\nnotifications_enabled = true\n")
    notifier = AttestationNotifier(conf=conf, topics=["tl-never"], send_retries=0)
    try:
        assert notifier.attestation_refused(INSTANCE, "cmp4", "high", "ttp_unreachable", "x")
        assert notifier.flush(20)
        assert notifier.stats_dict()["failed"] == 1 and notifier.stats_dict()["sent"] == 0
    finally:
        notifier.close()


def _launch(notifier: AttestationNotifier) -> str:
    """What the driver does when a launch is refused: notify, then fail the instance."""
    try:
        raise TTPUnreachable("https://ttp.example:9443 did not answer")
    except TTPUnreachable as error:
        notifier.attestation_refused(INSTANCE, "cmp5", "high", error.check, error.reason)
        return error.check


def test_rabbitmq_down_never_fails_or_blocks_the_launch():
    notifier = AttestationNotifier("rabbit://guest:guest@127.0.0.1:1/", queue_size=4,
                                   topics=["tl-never"], send_retries=0)
    try:
        checks = [_launch(notifier) for _ in range(20)]
        assert checks == ["ttp_unreachable"] * 20
        assert notifier.flush(30)
        stats = notifier.stats_dict()
        assert stats["sent"] == 0
        assert stats["failed"] + stats["dropped"] == 20 and stats["failed"] >= 1
    finally:
        notifier.close()
