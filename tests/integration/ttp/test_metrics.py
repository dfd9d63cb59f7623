"""GET /metrics and "last attested at" on the real TTP (two pre-forked workers, swtpm host).

A real host enrolls and sends a periodic quote; real launch attestations are
refused. The counters move by exactly what was sent, whichever worker served
each request (the exposition adds up every worker), the fleet gauges and the
host's last attestation time match the database, and nothing secret appears.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.ttp import CertificateAuthority, TTPServer
from trusted_launch.compute.enrollment import enroll_host
from trusted_launch.compute.host_monitor import HostMonitor
from trusted_launch.compute.ttp_client import TTPClient
from trusted_launch.sandbox.monitoring import BIND_KEY_PCRS, PROFILES_DIR
from trusted_launch.sandbox.ttp_process import start_ttp
from trusted_launch.tpm import TPMDevice

pytestmark = pytest.mark.swtpm

REFUSED_LAUNCHES = 12


@pytest.fixture(scope="module")
def ttp(tmp_path_factory: pytest.TempPathFactory, ttp_test_ca: CertificateAuthority,
        swtpm_state_cache) -> Iterator[TTPServer]:
    swtpm_state_cache.state(0)  # manufactures the EK CA
    with start_ttp(tmp_path_factory.mktemp("ttp-metrics"), tls_ca=ttp_test_ca,
                   ek_ca_files=swtpm_state_cache.ca.ek_ca_certs, workers=2,
                   profiles_dir=PROFILES_DIR) as server:
        yield server


def _samples(ttp: TTPServer) -> dict[tuple[str, frozenset], float]:
    response = ttp.admin("GET", "/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples}


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def _launch(host: str, ak_certificate: str) -> dict:
    """A launch attestation whose token is garbage: refused after the AK checks."""
    return {"host": host, "launch_id": str(uuid.uuid4()), "token": "A" * 120,
            "ak_certificate": ak_certificate, "bind_key_public": "AAJhYg==",
            "certify_info": "aW5mbw==", "certify_signature": "c2ln", "event_log": "bG9n",
            "bind_key_pcrs": BIND_KEY_PCRS}


def test_a_real_host_attestation_moves_the_counters_and_its_last_attested_at(
        ttp, booted_swtpm):
    before = _samples(ttp)
    name = f"metrics-{secrets.token_hex(3)}"
    with TPMDevice(booted_swtpm.tcti) as device:
        ttp.register_host(name, device.ek_certificate())
        client = TTPClient(ttp.url, ca_file=str(ttp.ca_file), connect_retries=0,
                           auth_token=ttp.create_token("host", name))
        enroll_host(device, client, name)
        assert ttp.admin("GET", f"/v1/hosts/{name}").json()["last_attested_at"] is None
        monitor = HostMonitor(device=device, ttp=client, host_name=name,
                              read_event_log=lambda: booted_swtpm.event_log,
                              pcr_selection=BIND_KEY_PCRS, interval=60)
        started = time.time()
        report = monitor.run_once()
    assert report.profile is not None, report

    after = _samples(ttp)
    trusted = ("ttp_attestations_total", dict(kind="host", verdict="trusted", check="none"))
    assert _value(after, trusted[0], **trusted[1]) - _value(before, trusted[0], **trusted[1]) \
        == 1
    count = ("ttp_attestation_duration_seconds_count", {"kind": "host"})
    assert _value(after, *count[:1], **count[1]) - _value(before, *count[:1], **count[1]) == 1
    last = _value(after, "ttp_host_last_attested_timestamp_seconds", host=name)
    assert started <= last <= time.time()
    assert _value(after, "ttp_host_trusted", host=name) == 1
    assert _value(after, "ttp_hosts", state="active") >= 1
    assert _value(after, "ttp_hosts_trusted", profile=report.profile) >= 1

    shown = ttp.admin("GET", f"/v1/hosts/{name}").json()["last_attested_at"]
    assert shown == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(last)))
    listed = {h["host"]: h for h in ttp.admin("GET", "/v1/hosts?status=1").json()["hosts"]}
    assert listed[name]["last_attested_at"] == shown


def test_refusals_from_every_worker_add_up_by_check(ttp, booted_swtpm):
    name = f"metrics-{secrets.token_hex(3)}"
    client = TTPClient(ttp.url, ca_file=str(ttp.ca_file), connect_retries=0)
    with TPMDevice(booted_swtpm.tcti) as device:
        ttp.register_host(name, device.ek_certificate())
        ak_certificate = enroll_host(device, client, name)
    before = _samples(ttp)
    for _ in range(REFUSED_LAUNCHES):  # a new connection each: both workers serve some
        ttp.session.close()
        answer = ttp.request("POST", "/v1/attestations", json=_launch(name, ak_certificate))
        assert answer.status_code == 403
    check = answer.json()["error"]["check"]
    unknown = ttp.request("POST", "/v1/attestations", json=_launch("nobody", ak_certificate))
    assert unknown.json()["error"]["check"] == "host_unknown"
    after = _samples(ttp)

    def moved(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert moved("ttp_attestations_total", kind="launch", verdict="refused",
                 check=check) == REFUSED_LAUNCHES
    assert moved("ttp_attestations_total", kind="launch", verdict="refused",
                 check="host_unknown") == 1
    assert moved("ttp_attestation_duration_seconds_count",
                 kind="launch") == REFUSED_LAUNCHES + 1
    lookups = sum(moved("ttp_cache_lookups_total", cache="ak_identities", result=result)
                  for result in ("hit", "miss"))
    assert lookups >= REFUSED_LAUNCHES  # every AK certificate is looked up in the cache
    assert moved("ttp_http_requests_total", code="403") == REFUSED_LAUNCHES + 1


def test_metrics_carry_no_secret(ttp):
    text = ttp.admin("GET", "/metrics").text
    assert ttp.admin_token not in text
    assert "BEGIN" not in text and "token=" not in text
    for line in text.splitlines():
        if line.startswith("ttp_attestations_total{"):
            assert "reason" not in line  # free-text reasons never become labels
