"""POST /v1/attestations around the verifier: host/AK checks, audit records, replay table."""

from __future__ import annotations

import base64
import secrets
import uuid

import pytest

from tests.fixtures.ttp import CertificateAuthority, TTPServer
from trusted_launch.ttp.db.api import AttestationRecord, TokenAlreadyUsed, TTPDatabase
from trusted_launch.ttp.db.migration import db_sync, db_version

GARBAGE_TOKEN = "A" * 120


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _request(host: str, ak_certificate: str) -> dict:
    return {"host": host, "launch_id": str(uuid.uuid4()), "token": GARBAGE_TOKEN,
            "ak_certificate": ak_certificate, "bind_key_public": _b64(b"\x00\x02ab"),
            "certify_info": _b64(b"info"), "certify_signature": _b64(b"sig"),
            "event_log": _b64(b"log"), "bind_key_pcrs": "sha256:0,1,2,3,4,5,6,7"}


def _audit(ttp: TTPServer, response) -> dict:
    assert response.status_code == 403, response.text
    attestation_id = response.json()["attestation_id"]
    record = ttp.admin("GET", f"/v1/attestations/{attestation_id}")
    assert record.status_code == 200
    body = record.json()
    assert GARBAGE_TOKEN not in record.text
    assert body["verdict"] == "refused" and body["attestation_id"] == attestation_id
    assert body["check"] == response.json()["error"]["check"]
    return body


def test_unknown_host_is_refused_and_recorded(ttp_server: TTPServer,
                                              other_test_ca: CertificateAuthority) -> None:
    pem = other_test_ca.cert_file.read_text()
    response = ttp_server.request("POST", "/v1/attestations",
                                  json=_request("never-enrolled", pem))
    assert response.json()["error"]["code"] == "attestation_refused"
    record = _audit(ttp_server, response)
    assert record["check"] == "host_unknown" and record["host"] == "never-enrolled"
    assert record["requester"].startswith("addr=127.0.0.1")


@pytest.mark.swtpm
def test_foreign_ak_certificate_is_refused(ttp_server: TTPServer, swtpm,
                                           other_test_ca: CertificateAuthority) -> None:
    from tests.integration.ttp.test_enrollment import Host, _enroll
    host = Host(swtpm.tcti)
    try:
        name = f"compute-{secrets.token_hex(4)}"
        genuine = _enroll(ttp_server, host, name)
        foreign = other_test_ca.cert_file.read_text()
        refused = ttp_server.request("POST", "/v1/attestations", json=_request(name, foreign))
        assert _audit(ttp_server, refused)["check"] == "ak_certificate"
        # With its genuine AK certificate the request reaches the verifier, which
        # refuses the garbage token; the refusal is recorded too.
        verified = ttp_server.request("POST", "/v1/attestations", json=_request(name, genuine))
        assert _audit(ttp_server, verified)["check"] == "token_malformed"
        other_host = ttp_server.request("POST", "/v1/attestations",
                                        json=_request("never-enrolled", genuine))
        assert _audit(ttp_server, other_host)["check"] == "host_unknown"
    finally:
        host.device.close()


def _record(verdict: str = "trusted") -> AttestationRecord:
    return AttestationRecord(id=str(uuid.uuid4()), requester="test", host="h",
                             launch_id=str(uuid.uuid4()), verdict=verdict, requested_profile="low",
                             satisfied_profile="low", evidence_digests={"event_log": "ab"})


def test_replay_table_rejects_a_second_redemption(ttp_database_url: str) -> None:
    db_sync(ttp_database_url)  # idempotent on the session database
    assert db_version(ttp_database_url) >= "0003"
    db = TTPDatabase(ttp_database_url)
    try:
        digest = secrets.token_bytes(32)
        first = _record()
        db.record_attestation(first, token_digest=digest, expires_at=2_000_000_000)
        second = _record()  # another launch id
        with pytest.raises(TokenAlreadyUsed):
            db.record_attestation(second, token_digest=digest, expires_at=2_000_000_000)
        assert db.get_attestation(first.id).verdict == "trusted"
        assert db.get_attestation(second.id) is None  # nothing of the replay was stored
        db.record_attestation(_record(), token_digest=secrets.token_bytes(32), expires_at=1)
    finally:
        db.dispose()


def test_expired_replay_rows_are_purged(ttp_database_url: str) -> None:
    db_sync(ttp_database_url)
    db = TTPDatabase(ttp_database_url)
    try:
        digest = secrets.token_bytes(32)
        db.record_attestation(_record(), token_digest=digest, expires_at=100)
        assert db.purge_used_tokens(now=200) >= 1
        db.record_attestation(_record(), token_digest=digest, expires_at=300)
    finally:
        db.dispose()


def test_database_failure_answers_503_and_records_nothing(
        tmp_path, ttp_test_ca: CertificateAuthority, swtpm_state_cache) -> None:
    """A refusal that cannot be recorded is not answered as a refusal: 503, no id."""
    import sqlite3

    from tests.fixtures.ttp import write_ttp_config
    url = f"sqlite:///{tmp_path / 'ttp.sqlite'}"
    cert, key = ttp_test_ca.issue("ttp-503")
    config = write_ttp_config(tmp_path, database_url=url, cert=cert, key=key,
                              admin_token="x", ek_ca_files=[ttp_test_ca.cert_file], workers=1)
    server = TTPServer(tmp_path, config, ttp_test_ca.cert_file, "x")
    assert server.manage("db", "sync").returncode == 0
    server.start()
    try:
        with sqlite3.connect(tmp_path / "ttp.sqlite") as connection:
            connection.execute("DROP TABLE attestations")
        pem = ttp_test_ca.cert_file.read_text()
        response = server.request("POST", "/v1/attestations", json=_request("h", pem))
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "service_unavailable"
        assert "attestation_id" not in response.json()
    finally:
        assert server.stop() == 0


def test_mutual_tls_refuses_clients_of_another_ca_and_names_the_requester(
        tmp_path, ttp_test_ca: CertificateAuthority,
        other_test_ca: CertificateAuthority) -> None:
    import requests

    from tests.fixtures.ttp import write_ttp_config
    cert, key = ttp_test_ca.issue("ttp-mtls")
    config = write_ttp_config(
        tmp_path, database_url=f"sqlite:///{tmp_path / 'ttp.sqlite'}", cert=cert, key=key,
        admin_token="x", ek_ca_files=[ttp_test_ca.cert_file], workers=1,
        client_ca_file=ttp_test_ca.cert_file)
    server = TTPServer(tmp_path, config, ttp_test_ca.cert_file, "x")
    assert server.manage("db", "sync").returncode == 0
    good_client = ttp_test_ca.issue("compute-7", server=False)
    server.session.cert = tuple(map(str, good_client))
    server.start()
    try:
        stranger = other_test_ca.issue("stranger", server=False)
        with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
            requests.get(f"{server.url}/", verify=str(ttp_test_ca.cert_file),
                         cert=tuple(map(str, stranger)), timeout=10)
        with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError)):
            requests.get(f"{server.url}/", verify=str(ttp_test_ca.cert_file), timeout=10)
        pem = ttp_test_ca.cert_file.read_text()
        refused = server.request("POST", "/v1/attestations", json=_request("h", pem))
        record = server.admin("GET", f"/v1/attestations/{refused.json()['attestation_id']}")
        assert record.json()["requester"] == "cn=compute-7"
    finally:
        assert server.stop() == 0
