"""HostMonitor's bookkeeping and the driver's trait decision.

The TTP here is a recording stand-in for the HTTPS client (the real round
trip is in tests/integration/test_host_monitor.py); the TPM is a real swtpm.
"""

from __future__ import annotations

import base64
import secrets
import time
import types
from unittest import mock

import pytest

from trusted_launch.compute.errors import AttestationRefused, TTPUnreachable
from trusted_launch.compute.host_monitor import (
    HostMonitor,
    HostStatusReport,
    below,
    quote_selection,
)
from trusted_launch.evidence.tpm2 import parse_attest

PROFILES = ["low", "medium", "high"]


class RecordingTTP:
    """Answers like the TTP would; remembers what was sent."""

    def __init__(self, answers: list[dict] | None = None, error: Exception | None = None):
        self.answers = list(answers or [])
        self.error = error
        self.bodies: list[dict] = []
        self.nonces: list[bytes] = []

    def host_challenge(self, host: str) -> dict:
        if self.error is not None:
            raise self.error
        nonce = secrets.token_bytes(32)
        self.nonces.append(nonce)
        return {"host": host, "nonce": base64.b64encode(nonce).decode()}

    def host_attestation(self, host: str, body: dict) -> dict:
        self.bodies.append(body)
        return self.answers.pop(0)


def test_quote_selection_adds_pcr10_only_with_ima():
    assert quote_selection("sha256:0-7", with_ima=False) == "sha256:0,1,2,3,4,5,6,7"
    assert quote_selection("sha256:0-7", with_ima=True) == "sha256:0,1,2,3,4,5,6,7,10"
    assert quote_selection("sha384:0", with_ima=True) == "sha384:0+sha256:10"


@pytest.mark.parametrize(("status", "profile", "expected"), [
    (None, "high", False),  # no round yet
    (HostStatusReport("high", None, None, 0.0), "high", False),
    (HostStatusReport("medium", None, None, 0.0), "high", True),
    (HostStatusReport("high", None, None, 0.0), "medium", False),
    (HostStatusReport(None, "quote_pcrs", "x", 0.0), "low", True),
    (HostStatusReport("ultra", None, None, 0.0), "high", True),  # unknown name
    (HostStatusReport("high", None, None, 0.0), None, False),  # no profile configured
])
def test_below(status, profile, expected):
    assert below(status, profile, PROFILES) is expected


@pytest.fixture
def device(swtpm):
    from trusted_launch.tpm.device import TPMDevice
    with TPMDevice(swtpm.tcti) as dev:
        dev.ensure_attestation_key()
        yield dev


def test_round_quotes_over_the_ttp_nonce_and_tracks_the_ima_offset(device, tmp_path):
    ima = tmp_path / "ascii_runtime_measurements"
    ima.write_bytes(b"0123456789")
    ttp = RecordingTTP([{"profile": "high", "ima_offset": 4},
                        {"profile": None, "check": "quote_pcrs", "reason": "differs",
                         "ima_offset": 4}])
    seen: list[HostStatusReport] = []
    monitor = HostMonitor(device=device, ttp=ttp, host_name="cmp", read_event_log=lambda: b"log",
                          pcr_selection="sha256:0-7", ima_list_path=str(ima),
                          on_status=seen.append)
    assert monitor.run_once().profile == "high"
    first = ttp.bodies[0]
    attest = parse_attest(base64.b64decode(first["quote"]))
    assert attest.extra_data == ttp.nonces[0]
    assert str(attest.attested.pcr_select) == "sha256:0,1,2,3,4,5,6,7,10"
    assert (base64.b64decode(first["ima_log"]), first["ima_offset"]) == (b"0123456789", 0)

    report = monitor.run_once()
    assert (base64.b64decode(ttp.bodies[1]["ima_log"]), ttp.bodies[1]["ima_offset"]) == (
        b"456789", 4)
    assert (report.profile, report.check, report.from_ttp) == (None, "quote_pcrs", True)
    assert [r.profile for r in seen] == ["high", None] and monitor.last is report


def test_refusal_makes_the_host_untrusted_in_its_own_eyes(device):
    ttp = RecordingTTP(error=AttestationRefused("host_unknown", "not enrolled"))
    monitor = HostMonitor(device=device, ttp=ttp, host_name="cmp", read_event_log=lambda: b"",
                          pcr_selection="sha256:0-7")
    report = monitor.run_once()
    assert (report.profile, report.check, report.from_ttp) == (None, "host_unknown", False)


def test_nonce_refusals_are_retried_then_keep_the_last_status(device):
    ttp = RecordingTTP([{"profile": "high"}])
    monitor = HostMonitor(device=device, ttp=ttp, host_name="cmp", read_event_log=lambda: b"",
                          pcr_selection="sha256:0-7")
    monitor.run_once()
    refusals = iter([AttestationRefused("nonce_unknown", "evicted")] * 2)

    def refuse(host, body):
        ttp.bodies.append(body)
        raise next(refusals)
    ttp.host_attestation = refuse
    with pytest.raises(TTPUnreachable, match="nonce_unknown"):
        monitor.run_once()
    assert len(ttp.bodies) == 3 and len(set(ttp.nonces)) == 3  # a fresh nonce each time
    assert monitor.last.profile == "high"


def test_unreachable_ttp_keeps_the_last_status(device):
    ttp = RecordingTTP([{"profile": "medium"}])
    monitor = HostMonitor(device=device, ttp=ttp, host_name="cmp", read_event_log=lambda: b"",
                          pcr_selection="sha256:0-7")
    monitor.run_once()
    ttp.error = TTPUnreachable("down")
    with pytest.raises(TTPUnreachable):
        monitor.run_once()
    assert monitor.last.profile == "medium" and monitor.rounds == 1


def test_unreadable_event_log_is_a_local_failure(device, tmp_path):
    def missing() -> bytes:
        return (tmp_path / "absent").read_bytes()
    monitor = HostMonitor(device=device, ttp=RecordingTTP(), host_name="cmp",
                          read_event_log=missing, pcr_selection="sha256:0-7")
    report = monitor.run_once()
    assert (report.profile, report.check) == (None, "host_evidence")


def test_thread_runs_rounds_until_stopped(device):
    ttp = RecordingTTP([{"profile": "high"}] * 100)
    monitor = HostMonitor(device=device, ttp=ttp, host_name="cmp", read_event_log=lambda: b"",
                          pcr_selection="sha256:0-7", interval=0.01)
    monitor.start()
    try:
        for _ in range(500):
            if monitor.rounds >= 3:
                break
            time.sleep(0.01)
    finally:
        monitor.stop()
    assert monitor.rounds >= 3
    rounds = monitor.rounds
    assert not monitor._thread.is_alive() and monitor.rounds == rounds


@pytest.mark.parametrize(("status", "traits"), [
    (None, {"CUSTOM_TRUSTED_SP_LOW", "CUSTOM_TRUSTED_SP_MEDIUM", "CUSTOM_TRUSTED_SP_HIGH"}),
    (HostStatusReport("high", None, None, 0.0),
     {"CUSTOM_TRUSTED_SP_LOW", "CUSTOM_TRUSTED_SP_MEDIUM", "CUSTOM_TRUSTED_SP_HIGH"}),
    (HostStatusReport("medium", "stronger_profile", "x", 0.0), set()),
    (HostStatusReport(None, "quote_pcrs", "x", 0.0), set()),
])
def test_driver_drops_profile_traits_while_below_its_profile(status, traits):
    import uuid

    from nova.compute import provider_tree
    from nova.virt.libvirt import driver as libvirt_driver

    from trusted_launch.compute.driver import TrustedLibvirtDriver

    tree = provider_tree.ProviderTree()
    tree.new_root("node", str(uuid.uuid4()))
    tree.add_traits("node", "CUSTOM_TRUSTED_SP_HIGH", "CUSTOM_OTHER")
    driver = TrustedLibvirtDriver.__new__(TrustedLibvirtDriver)  # no libvirt behind it
    driver.trusted_host, driver.host_security_profile = object(), "high"
    driver.host_monitor = types.SimpleNamespace(last=status)
    with mock.patch.object(libvirt_driver.LibvirtDriver, "update_provider_tree"):
        driver.update_provider_tree(tree, "node")
    current = tree.data("node").traits
    assert {t for t in current if t.startswith("CUSTOM_TRUSTED_SP_")} == traits
    assert "CUSTOM_OTHER" in current
