"""The fleet bench's simulated hosts produce evidence the real TTP judges like a TPM's.

bench/bench_fleet.py drives thousands of :class:`bench.fleet_hosts.SoftwareTPM`
hosts; its figures mean something only if that evidence takes the TTP's real
path. Here the real TTP (HTTPS process, example profiles, the bench vendor
CA in ``ek_ca_files``) enrolls a simulated host the operator registered
through the product's ``enroll_host``, accepts its quotes from the product's
``HostMonitor`` and from the bench's own wire client, and refuses them when one byte is changed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl

import pytest

from bench.fleet_hosts import (
    FirmwareLog,
    FleetHost,
    SoftwareTPM,
    SoftwareTPMError,
    VendorCA,
    attest_round,
    host_headers,
)
from tests.conftest import EVENTLOG_DIR
from trusted_launch.compute.enrollment import enroll_host
from trusted_launch.compute.host_monitor import HostMonitor, quote_selection
from trusted_launch.evidence.algorithms import HashAlg
from trusted_launch.evidence.eventlog import parse_event_log
from trusted_launch.sandbox.hosts import ttp_client
from trusted_launch.sandbox.pki import CertificateAuthority
from trusted_launch.sandbox.ttp_process import start_ttp

PROFILES = EVENTLOG_DIR.parents[2] / "examples" / "profiles"
SECURE_BOOT_LOG = EVENTLOG_DIR / "secureboot_binary_bios_measurements"
SELECTION = quote_selection("sha256:0,1,2,3,4,5,6,7", with_ima=False)


@pytest.fixture(scope="module")
def vendor() -> VendorCA:
    return VendorCA()


@pytest.fixture(scope="module")
def ttp(tmp_path_factory: pytest.TempPathFactory, vendor: VendorCA):
    directory = tmp_path_factory.mktemp("fleet-ttp")
    ek_ca = vendor.write(directory / "vendor-ca.pem")
    with start_ttp(directory / "ttp", tls_ca=CertificateAuthority(directory / "tls"),
                   ek_ca_files=[ek_ca], profiles_dir=PROFILES) as server:
        yield server


@pytest.fixture(scope="module")
def log() -> FirmwareLog:
    return FirmwareLog.read(SECURE_BOOT_LOG)


def _enrolled(name: str, ttp, log: FirmwareLog, vendor: VendorCA) -> FleetHost:
    """Registered by the operator (EK fingerprint, host token), then enrolled by the host."""
    tpm = SoftwareTPM(log, vendor)
    ttp.register_host(name, tpm.ek_certificate())
    token = ttp.create_token("host", name)
    certificate = enroll_host(tpm, ttp_client(ttp, auth_token=token), name)
    return FleetHost(name, tpm, SELECTION, certificate, token)


def _challenge(ttp, host: FleetHost) -> bytes:
    answer = ttp.request("POST", f"/v1/hosts/{host.name}/challenges", json={},
                         headers=host_headers(host))
    assert answer.status_code == 201, answer.text
    return base64.b64decode(answer.json()["nonce"])


def _post_attestation(ttp, host: FleetHost, body: dict):
    return ttp.request("POST", f"/v1/hosts/{host.name}/attestations", json=body,
                       headers=host_headers(host))


def _sha256_digest_offset(log: FirmwareLog, pcr: int) -> int:
    """Where the log holds the SHA-256 digest of its first event extended into ``pcr``."""
    event = next(e for e in parse_event_log(log.data).events
                 if e.pcr == pcr and HashAlg.SHA256 in e.digests)
    offset = log.data.find(event.digests[HashAlg.SHA256], event.offset)
    assert offset > 0
    return offset


def _flip(value: str, index: int) -> str:
    data = bytearray(base64.b64decode(value))
    data[index] ^= 0x01
    return base64.b64encode(bytes(data)).decode()


def test_enrollment_issues_an_ak_certificate_for_the_software_ak(ttp, log, vendor):
    host = _enrolled("fleet-enrol-1", ttp, log, vendor)
    assert "BEGIN CERTIFICATE" in host.ak_certificate
    assert ttp.admin("GET", "/v1/hosts/fleet-enrol-1").json()["state"] == "active"


def test_activation_needs_this_tpm(ttp, log, vendor):
    """A credential made for one software TPM's AK does not activate with another's keys."""
    first, second = SoftwareTPM(log, vendor), SoftwareTPM(log, vendor)
    ttp.register_host("fleet-enrol-2", first.ek_certificate())
    challenge = ttp_client(ttp).enroll({
        "host": "fleet-enrol-2",
        "ek_certificate": base64.b64encode(first.ek_certificate()).decode(),
        "ek_public": base64.b64encode(first.ek_public()).decode(),
        "ak_public": base64.b64encode(first.ensure_attestation_key().public).decode()})
    blob = base64.b64decode(challenge["credential_blob"])
    secret = base64.b64decode(challenge["encrypted_secret"])
    with pytest.raises(SoftwareTPMError):
        second.activate_credential(blob, secret)
    assert len(first.activate_credential(blob, secret)) == 32


def test_host_monitor_with_a_software_tpm_is_judged_high(ttp, log, vendor):
    host = _enrolled("fleet-monitor-1", ttp, log, vendor)
    monitor = HostMonitor(device=host.tpm, ttp=ttp_client(ttp, auth_token=host.token),
                          host_name=host.name,
                          read_event_log=lambda: log.data, pcr_selection="sha256:0-7")
    report = monitor.run_once()
    assert (report.profile, report.from_ttp, report.check) == ("high", True, None)


def test_the_wire_client_round_is_accepted(ttp, log, vendor):
    host = _enrolled("fleet-wire-1", ttp, log, vendor)
    context = ssl.create_default_context(cafile=str(ttp.ca_file))
    result = asyncio.run(attest_round(host, ttp.port, context))
    assert (result.ok, result.profile, result.check) == (True, "high", None), result
    assert result.checked_at is not None and result.started <= result.checked_at <= result.ended
    statuses = {s["host"]: s for s in ttp.admin("GET", "/v1/hosts?status=1").json()["hosts"]}
    assert statuses[host.name]["checked_at"] == result.checked_at


@pytest.mark.parametrize(("field", "index", "check"), [
    ("quote", 50, "quote_signature"),      # extraData: the nonce inside the signed quote
    ("quote", -1, "quote_signature"),      # the last byte of pcrDigest
    ("signature", -1, "quote_signature"),  # ECDSA s
    ("nonce", 0, "nonce_unknown"),
])
def test_one_changed_byte_is_refused(ttp, log, vendor, field, index, check):
    host = _enrolled(f"fleet-flip-{field}-{index % 100}", ttp, log, vendor)
    body = json.loads(host.attestation_body(_challenge(ttp, host)))
    body[field] = _flip(body[field], index)
    answer = _post_attestation(ttp, host, body)
    assert answer.status_code == 403, answer.text
    assert answer.json()["error"]["check"] == check


def test_one_changed_event_log_byte_makes_the_host_untrusted(ttp, log, vendor):
    """The quote verifies but no longer matches the log: the host's own statement."""
    host = _enrolled("fleet-flip-log", ttp, log, vendor)
    body = json.loads(host.attestation_body(_challenge(ttp, host)))
    body["event_log"] = _flip(body["event_log"], _sha256_digest_offset(log, pcr=7))
    answer = _post_attestation(ttp, host, body)
    assert answer.status_code == 200, answer.text
    assert answer.json()["profile"] is None
    assert answer.json()["check"] == "quote_pcrs"


def test_the_unchanged_body_is_accepted_once(ttp, log, vendor):
    host = _enrolled("fleet-replay", ttp, log, vendor)
    body = json.loads(host.attestation_body(_challenge(ttp, host)))
    first = _post_attestation(ttp, host, body)
    assert (first.status_code, first.json()["profile"]) == (200, "high"), first.text
    again = _post_attestation(ttp, host, body)
    assert (again.status_code, again.json()["error"]["check"]) == (403, "nonce_unknown")
