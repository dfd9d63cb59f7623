"""The VM's trust status: the launch receipt on the config drive, checked by the agent."""

from __future__ import annotations

import hashlib
import http.client
import json
import os

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.fixtures.receipts import receipt_for as fixture_receipt
from tests.unit.guest.conftest import SERVER_ID, serve_in_thread
from trusted_launch.cmd import guest as guest_cmd
from trusted_launch.crypto.receipt import (
    Receipt,
    public_key_pem,
    sign_receipt,
)
from trusted_launch.guest.agent import ChallengeServer
from trusted_launch.guest.identity import load_identity
from trusted_launch.guest.receipt_status import load_receipt_status, motd_text

TOKEN_DIGEST = hashlib.sha256(b"token").digest()
TTP_KEY = ec.generate_private_key(ec.SECP256R1())


def receipt_for(nonce: bytes, **changes) -> Receipt:
    return fixture_receipt(nonce, TOKEN_DIGEST, **{"launch_id": SERVER_ID, **changes})


@pytest.fixture
def drive(config_drive):
    """The config drive with receipt.json and receipt_key.pem beside the nonce."""
    root, nonce = config_drive
    folder = root / "trusted_launch"
    (folder / "receipt.json").write_text(json.dumps(sign_receipt(receipt_for(nonce), TTP_KEY)))
    (folder / "receipt_key.pem").write_text(public_key_pem(TTP_KEY.public_key()))
    return root, nonce, folder / "receipt.json", folder / "receipt_key.pem"


def test_signed_bound_receipt_verifies(drive):
    _, nonce, receipt_file, key_file = drive
    status = load_receipt_status(receipt_file, key_file, nonce)
    assert status.signature == "ok" and status.bound_to_nonce and status.verified
    assert status.receipt.host == "compute-7"
    text = motd_text(status, "https://ttp.example:9443")
    assert text.startswith("trusted launch: verified by TTP https://ttp.example:9443 for "
                           "profile high")
    assert "on host compute-7 at 2026-09-21T" in text and "receipt signature OK" in text


def test_receipt_signed_by_another_key_is_invalid(drive):
    _, nonce, receipt_file, key_file = drive
    key_file.write_text(public_key_pem(ec.generate_private_key(ec.SECP256R1()).public_key()))
    status = load_receipt_status(receipt_file, key_file, nonce)
    assert status.signature == "invalid" and not status.verified and status.receipt is None
    assert "not a trusted TTP receipt key" in status.problem
    assert "unusable" in motd_text(status, None)


def test_altered_receipt_is_invalid(drive):
    _, nonce, receipt_file, key_file = drive
    document = json.loads(receipt_file.read_text())
    forged = sign_receipt(receipt_for(nonce, host="compute-evil"), TTP_KEY)
    document["payload"] = forged["payload"]  # the old signature over a new payload
    receipt_file.write_text(json.dumps(document))
    status = load_receipt_status(receipt_file, key_file, nonce)
    assert status.signature == "invalid" and "does not verify" in status.problem


def test_receipt_of_another_launch_is_not_bound(drive):
    _, _, receipt_file, key_file = drive
    status = load_receipt_status(receipt_file, key_file, os.urandom(32))
    assert status.signature == "ok" and not status.bound_to_nonce and not status.verified
    assert "NOT bound to this VM's launch nonce" in motd_text(status, None)


def test_without_a_key_the_signature_is_unchecked(drive):
    _, nonce, receipt_file, _ = drive
    status = load_receipt_status(receipt_file, None, nonce)
    assert status.signature == "unchecked" and not status.verified
    assert "NOT checked" in motd_text(status, None)


def test_no_receipt_and_garbage_receipt(drive, tmp_path):
    _, nonce, receipt_file, key_file = drive
    assert not load_receipt_status(tmp_path / "absent", key_file, nonce).present
    receipt_file.write_bytes(b"\xff" * 100)
    status = load_receipt_status(receipt_file, key_file, nonce)
    assert status.present and status.signature == "invalid" and "not JSON" in status.problem


def test_refused_receipt_is_shown_as_a_warning(drive):
    _, nonce, receipt_file, key_file = drive
    receipt_file.write_text(json.dumps(sign_receipt(receipt_for(
        nonce, verdict="refused", satisfied_profile=None, check="profile_policy",
        reason="Secure Boot is off"), TTP_KEY)))
    status = load_receipt_status(receipt_file, key_file, nonce)
    assert not status.verified
    assert "WARNING" in motd_text(status, None) and "profile_policy" in motd_text(status, None)


def test_status_endpoint_reports_the_receipt(drive):
    root, nonce, receipt_file, key_file = drive
    identity = load_identity(nonce_file=root / "trusted_launch" / "nonce", server_id=SERVER_ID,
                             ssh_host_key=root / "ssh_host_ed25519_key.pub")
    server = ChallengeServer(("127.0.0.1", 0), identity,
                             receipt_status=load_receipt_status(receipt_file, key_file, nonce))
    thread = serve_in_thread(server)
    try:
        connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1],
                                                timeout=5)
        connection.request("GET", "/v1/status")
        response = connection.getresponse()
        body = response.read().decode()
        connection.close()
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    receipt = json.loads(body)["receipt"]
    assert receipt["verified"] is True and receipt["verdict"] == "trusted"
    assert receipt["host"] == "compute-7" and receipt["signature"] == "ok"
    assert nonce.hex() not in body


def test_cli_status_and_motd(drive, tmp_path, capsys):
    root, nonce, receipt_file, key_file = drive
    meta = root / "openstack" / "latest" / "meta_data.json"
    meta.write_text(json.dumps({"uuid": SERVER_ID, "meta": {"trusted_ttp": "https://ttp:9443"}}))
    motd = tmp_path / "motd"
    status = guest_cmd.main([
        "--status", "--nonce-file", str(root / "trusted_launch" / "nonce"),
        "--meta-data", str(meta), "--ssh-host-key", str(root / "ssh_host_ed25519_key.pub"),
        "--receipt-file", str(receipt_file), "--receipt-key", str(key_file),
        "--motd", str(motd)])
    out = capsys.readouterr().out
    assert status == 0
    assert "launch receipt: trusted for profile high" in out
    assert "receipt signature: ok (key from pinned)" in out
    assert motd.read_text().startswith("trusted launch: verified by TTP https://ttp:9443")
    assert nonce.hex() not in out + motd.read_text()
