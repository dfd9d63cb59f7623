"""Launch receipts at the real TTP: issued per decision, fetched only with a proof of N."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import stat
import time

import pytest
from sqlalchemy import create_engine, text

from tests.fixtures.ttp import TTPServer
from tests.integration.ttp.test_release import (
    PROFILE,
    _attestation,
    _current_key,
    at_least_as_strict,
    attested_host,  # noqa: F401 - a fixture
)
from trusted_launch.client.errors import ReceiptUnavailable
from trusted_launch.client.receipts import fetch_receipt, fetch_receipts
from trusted_launch.cmd import cli
from trusted_launch.crypto.digest import ImageDigest
from trusted_launch.crypto.receipt import (
    load_receipt_public_key,
    receipt_auth,
    receipt_key_id,
    receipt_proof,
    verify_receipt,
)
from trusted_launch.crypto.token import LaunchToken, seal_token, token_digest

pytestmark = pytest.mark.swtpm


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def receipt_keys(ttp: TTPServer) -> dict:
    entries = ttp.request("GET", "/v1/keys").json()["receipt_keys"]
    keys = {}
    for entry in entries:
        key = load_receipt_public_key(entry["public_key"])
        assert entry["id"] == receipt_key_id(key)
        assert entry["algorithm"] == "ecdsa-p256-sha256"
        keys[entry["id"]] = key
    return keys


def get_receipts(ttp: TTPServer, token: str, proof: bytes | None) -> tuple[int, dict]:
    headers = {} if proof is None else {"X-Receipt-Proof": b64url(proof)}
    response = ttp.request("GET", f"/v1/receipts/{token_digest(token).hex()}", headers=headers)
    return response.status_code, response.json()


def sha256(b64: str) -> str:
    return hashlib.sha256(base64.b64decode(b64)).hexdigest()


def test_trusted_decision_comes_with_a_signed_receipt(ttp_server, attested_host):  # noqa: F811
    body, nonce, _ = _attestation(ttp_server, attested_host, PROFILE["name"])
    answer = ttp_server.request("POST", "/v1/attestations", json=body).json()
    receipt = verify_receipt(answer["receipt"], receipt_keys(ttp_server)).receipt
    assert receipt.verdict == "trusted" and receipt.attestation_id == answer["attestation_id"]
    assert (receipt.host, receipt.launch_id) == (body["host"], body["launch_id"])
    assert receipt.requested_profile == PROFILE["name"]
    assert at_least_as_strict(ttp_server, receipt.satisfied_profile, PROFILE["name"])
    assert receipt.image_digest == "sha256:" + bytes(range(32)).hex()
    assert receipt.token_digest == token_digest(body["token"]).hex()
    assert receipt.evidence["event_log"] == sha256(body["event_log"])
    assert receipt.evidence["bind_key_public"] == sha256(body["bind_key_public"])
    assert receipt.evidence["certify_info"] == sha256(body["certify_info"])
    assert receipt.ttp_key_id == _current_key(ttp_server)[0]
    assert abs(receipt.issued_at - time.time()) < 600
    text_form = json.dumps(answer["receipt"]) + json.dumps(receipt.to_json())
    assert nonce.hex() not in text_form and body["token"] not in text_form


def test_tenant_sees_the_release_and_the_replay(ttp_server, attested_host):  # noqa: F811
    body, nonce, _ = _attestation(ttp_server, attested_host, PROFILE["name"])
    assert ttp_server.request("POST", "/v1/attestations", json=body).status_code == 200
    replay = ttp_server.request("POST", "/v1/attestations", json=body)
    assert replay.status_code == 403
    receipts = fetch_receipts(ttp_server.url, body["token"], nonce,
                              ca_file=str(ttp_server.ca_file))
    assert [(r.verdict, r.check) for r in receipts] == [
        ("trusted", None), ("refused", "token_replayed")]
    assert receipts[1].attestation_id == replay.json()["attestation_id"]
    decisive = fetch_receipt(ttp_server.url, body["token"], nonce,
                             ca_file=str(ttp_server.ca_file))
    assert decisive.verdict == "trusted"


def test_refusal_after_opening_the_token_is_receipted(ttp_server, attested_host):  # noqa: F811
    body, nonce, _ = _attestation(ttp_server, attested_host, "no-such-profile")
    assert ttp_server.request("POST", "/v1/attestations", json=body).status_code == 403
    receipt = fetch_receipt(ttp_server.url, body["token"], nonce,
                            ca_file=str(ttp_server.ca_file))
    assert (receipt.verdict, receipt.check) == ("refused", "profile_unknown")
    assert receipt.requested_profile == "no-such-profile"


def test_refusal_before_verification_is_receipted(ttp_server, attested_host):  # noqa: F811
    body, nonce, _ = _attestation(ttp_server, attested_host, PROFILE["name"])
    unknown = {**body, "host": f"never-enrolled-{secrets.token_hex(3)}"}
    assert ttp_server.request("POST", "/v1/attestations", json=unknown).status_code == 403
    receipt = fetch_receipt(ttp_server.url, body["token"], nonce,
                            ca_file=str(ttp_server.ca_file))
    assert (receipt.verdict, receipt.check, receipt.host) == (
        "refused", "host_unknown", unknown["host"])
    assert receipt.image_digest == "sha256:" + bytes(range(32)).hex()


def test_receipts_need_the_proof_of_n(ttp_server, attested_host):  # noqa: F811
    body, nonce, _ = _attestation(ttp_server, attested_host, PROFILE["name"])
    ttp_server.request("POST", "/v1/attestations", json=body)
    status, answer = get_receipts(ttp_server, body["token"], receipt_proof(secrets.token_bytes(32)))
    assert status == 403 and answer["error"]["check"] == "receipt_proof"
    assert "receipts" not in answer
    assert get_receipts(ttp_server, body["token"], None)[0] == 400
    assert get_receipts(ttp_server, body["token"], b"short")[0] == 400
    assert get_receipts(ttp_server, body["token"], nonce)[0] == 403  # N itself is not the proof
    status, answer = get_receipts(ttp_server, body["token"], receipt_proof(nonce))
    assert status == 200 and len(answer["receipts"]) == 1
    with pytest.raises(ReceiptUnavailable, match="HTTP 403"):
        fetch_receipts(ttp_server.url, body["token"], secrets.token_bytes(32),
                       ca_file=str(ttp_server.ca_file))


def test_unknown_token_is_404_and_bad_digest_too(ttp_server):
    _, public_key = _current_key(ttp_server)
    key_id = _current_key(ttp_server)[0]
    nonce = secrets.token_bytes(32)
    never_used = seal_token(LaunchToken(nonce=nonce, profile="x",
                                        image_digest=ImageDigest("sha256", bytes(32)),
                                        expires_at=int(time.time()) + 60), public_key, key_id)
    status, answer = get_receipts(ttp_server, never_used, receipt_proof(nonce))
    assert status == 404 and answer["error"]["check"] == "receipt"
    bad = ttp_server.request("GET", "/v1/receipts/NOT-HEX",
                             headers={"X-Receipt-Proof": b64url(receipt_proof(nonce))})
    assert bad.status_code == 404


def test_database_keeps_only_one_way_values(ttp_server, ttp_database_url,
                                            attested_host):  # noqa: F811
    body, nonce, _ = _attestation(ttp_server, attested_host, PROFILE["name"])
    ttp_server.request("POST", "/v1/attestations", json=body)
    digest = token_digest(body["token"]).hex()
    engine = create_engine(ttp_database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(text(
                "SELECT attestation_id, token_digest, receipt_auth, document FROM receipts "
                "WHERE token_digest = :digest"), {"digest": digest}).all()
    finally:
        engine.dispose()
    assert len(rows) == 1
    stored = " ".join(str(value) for value in rows[0])
    assert rows[0].receipt_auth == receipt_auth(receipt_proof(nonce)).hex()
    for secret in (nonce, receipt_proof(nonce)):
        assert secret.hex() not in stored and b64url(secret) not in stored
    assert body["token"] not in stored


def test_receipt_key_file_is_private_and_published(ttp_server):
    key_file = ttp_server.directory / "keys" / "receipt.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(receipt_keys(ttp_server)) == 1
    document = ttp_server.request("GET", "/v1/openapi.json").json()
    assert "/v1/receipts/{token_digest}" in document["paths"]


def test_receipt_cli_show(ttp_server, attested_host, tmp_path, capsys):  # noqa: F811
    body, nonce, _ = _attestation(ttp_server, attested_host, PROFILE["name"])
    ttp_server.request("POST", "/v1/attestations", json=body)
    (tmp_path / "token").write_text(body["token"] + "\n")
    (tmp_path / "nonce").write_text(nonce.hex() + "\n")
    common = ["receipt", "show", "--ttp", ttp_server.url, "--token-file",
              str(tmp_path / "token"), "--nonce-file", str(tmp_path / "nonce"),
              "--ca-file", str(ttp_server.ca_file)]
    assert cli.main(common) == 0
    out = capsys.readouterr().out
    assert "1 signed receipt(s)" in out and "TRUSTED" in out and body["host"] in out
    assert cli.main([*common, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["receipts"][0]["verdict"] == "trusted"
    (tmp_path / "nonce").write_text(secrets.token_bytes(32).hex() + "\n")
    assert cli.main(common) == 1
    assert "HTTP 403" in capsys.readouterr().err
