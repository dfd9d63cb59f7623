"""Receipt and mutual authentication end to end: swtpm host, TTP over HTTPS, tenant, guest.

The host attests to the real TTP, opens {N, H} in its TPM and puts N, the
TTP's receipt and the TTP's receipt key on the VM's config drive; the guest
agent shows the checked receipt as its trust status; the tenant fetches the
same receipt with its proof of N, authenticates the VM mutually and installs an
SSH key through the session. Nothing is mocked.
"""

from __future__ import annotations

import base64
import json
import os
import pathlib
import secrets
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.integration.test_protocol import PROFILES_DIR, TRUSTED_LOG, _client, _start_host
from trusted_launch.client.errors import VMVerificationFailed
from trusted_launch.client.launch_token import create_launch_token
from trusted_launch.client.mutual import mutual_authenticate
from trusted_launch.client.receipts import fetch_receipt
from trusted_launch.compute.launch import PendingRelease
from trusted_launch.crypto.digest import ImageDigest
from trusted_launch.crypto.nonce import encode_nonce, read_nonce_file
from trusted_launch.crypto.vm_challenge import mutual_key, mutual_mac
from trusted_launch.guest.agent import ChallengeServer
from trusted_launch.guest.identity import load_identity
from trusted_launch.guest.mutual import MutualAuthenticator
from trusted_launch.guest.receipt_status import load_receipt_status, motd_text
from trusted_launch.sandbox.pki import CertificateAuthority
from trusted_launch.sandbox.ttp_process import TTPServer, start_ttp

pytestmark = pytest.mark.swtpm


@dataclass
class Launched:
    address: str
    server_id: str
    nonce: bytes
    token: str
    authorized_keys: pathlib.Path
    server: ChallengeServer


def _ssh_key_line(comment: str) -> str:
    return Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode() \
        + f" {comment}"


@pytest.fixture(scope="module")
def ttp(swtpm_state_cache, tmp_path_factory) -> Iterator[TTPServer]:
    directory = tmp_path_factory.mktemp("mutual-ttp")
    swtpm_state_cache.state(0)
    with start_ttp(directory / "ttp", tls_ca=CertificateAuthority(directory / "tls-ca"),
                   ek_ca_files=swtpm_state_cache.ca.ek_ca_certs) as server:
        server.put_profile("high", (PROFILES_DIR / "high.yaml").read_text())
        yield server


@pytest.fixture(scope="module")
def launched(ttp, swtpm_state_cache, tmp_path_factory) -> Iterator[Launched]:
    """A VM launched on an attested swtpm host, its agent serving on 127.0.0.1."""
    root = tmp_path_factory.mktemp("vm")
    host = _start_host(f"mutual-{secrets.token_hex(3)}", 3, TRUSTED_LOG, ttp, swtpm_state_cache)
    try:
        token, nonce_path = create_launch_token(
            ttp.url, "high", ImageDigest("sha512", bytes(64)), ca_file=str(ttp.ca_file),
            nonce_dir=root / "tenant")
        server_id = str(uuid.uuid4())
        bind_key, body = host.runner.evidence(token=token, launch_id=server_id)
        answer = _client(ttp).attest(body)
        released = host.runner.open(PendingRelease(
            bind_key, server_id, base64.b64decode(answer["released"]), answer["attestation_id"]))
    finally:
        host.device.close()
        host.tpm.stop()
    drive = root / "config-drive" / "trusted_launch"
    drive.mkdir(parents=True)
    (drive / "nonce").write_bytes(encode_nonce(released.nonce))
    (drive / "receipt.json").write_text(json.dumps(answer["receipt"]))
    key_pem = ttp.request("GET", "/v1/keys").json()["receipt_keys"][0]["public_key"]
    (drive / "receipt_key.pem").write_text(key_pem)
    (root / "ssh_host_ed25519_key.pub").write_text(_ssh_key_line("root@vm") + "\n")
    identity = load_identity(nonce_file=drive / "nonce", server_id=server_id,
                             ssh_host_key=root / "ssh_host_ed25519_key.pub")
    authorized_keys = root / "home" / ".ssh" / "authorized_keys"
    server = ChallengeServer(
        ("127.0.0.1", 0), identity,
        mutual=MutualAuthenticator(identity, authorized_keys=authorized_keys),
        receipt_status=load_receipt_status(drive / "receipt.json", drive / "receipt_key.pem",
                                           identity.nonce))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield Launched(f"127.0.0.1:{server.server_address[1]}", server_id,
                       read_nonce_file(nonce_path), token, authorized_keys, server)
    finally:
        server.shutdown()
        server.server_close()


def test_vm_trust_status_shows_the_verified_receipt(launched, ttp):
    status = launched.server.receipt_status
    assert status.verified and status.signature == "ok" and status.bound_to_nonce
    assert status.receipt.launch_id == launched.server_id
    message = motd_text(status, ttp.url)
    assert message.startswith(f"trusted launch: verified by TTP {ttp.url} for profile high")
    assert "receipt signature OK" in message


def test_tenant_fetches_the_same_receipt(launched, ttp):
    receipt = fetch_receipt(ttp.url, launched.token, launched.nonce, ca_file=str(ttp.ca_file))
    assert receipt.attestation_id == launched.server.receipt_status.receipt.attestation_id
    assert receipt.verdict == "trusted" and receipt.launch_id == launched.server_id


def test_mutual_authentication_installs_the_tenant_key(launched):
    assert not launched.authorized_keys.exists()
    session = mutual_authenticate(launched.address, launched.server_id, launched.nonce)
    line = _ssh_key_line("tenant@laptop")
    session.authorize_ssh_key(line)
    assert line in launched.authorized_keys.read_text()


def test_phishing_vm_and_impostor_tenant_both_fail(launched):
    before = launched.authorized_keys.read_text() if launched.authorized_keys.exists() else ""
    with pytest.raises(VMVerificationFailed, match="does not prove knowledge"):
        mutual_authenticate(launched.address, launched.server_id, os.urandom(32))
    # an impostor that skips the VM check and answers with a MAC under a guessed N
    from tests.unit.guest.test_agent import post
    c1 = os.urandom(32)
    b64 = lambda data: base64.urlsafe_b64encode(data).decode().rstrip("=")  # noqa: E731
    status, start = post(launched.address, json.dumps(
        {"server_id": launched.server_id, "c1": b64(c1)}).encode(), path="/v1/mutual/start")
    assert status == 200
    c2 = base64.urlsafe_b64decode(start["c2"] + "=")
    forged = mutual_mac(mutual_key(os.urandom(32)), "client", c1, c2, launched.server_id,
                        start["ssh_host_key_fingerprint"])
    status, refused = post(launched.address, json.dumps(
        {"c2": start["c2"], "mac_client": b64(forged)}).encode(), path="/v1/mutual/finish")
    assert status == 403 and "does not prove knowledge" in refused["error"]
    after = launched.authorized_keys.read_text() if launched.authorized_keys.exists() else ""
    assert after == before


def test_cli_verify_mutual_with_key(launched, tmp_path, capsys):
    from trusted_launch.cmd import cli
    key_file = tmp_path / "id_ed25519.pub"
    line = _ssh_key_line("cli@tenant")
    key_file.write_text(line + "\n")
    nonce_file = tmp_path / "nonce"
    nonce_file.write_bytes(encode_nonce(launched.nonce))
    status = cli.main(["verify", "--server-id", launched.server_id, "--address",
                       launched.address, "--nonce-file", str(nonce_file), "--mutual",
                       "--authorize-ssh-key", str(key_file), "--json"])
    document = json.loads(capsys.readouterr().out)
    assert status == 0 and document["mutual"] is True
    assert document["authorized_ssh_key"].startswith("SHA256:")
    assert line in launched.authorized_keys.read_text()
