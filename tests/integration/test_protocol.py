"""The protocol end to end: swtpm hosts, the TTP over HTTPS, tenant and guest.

Every party is real: each host is its own swtpm booted from a real firmware
event log and enrolled through EK certificate + credential activation, the TTP
is the ``trusted-launch-ttp`` process over HTTPS on SQLite, PostgreSQL or
MariaDB, the tenant uses the client library and the guest agent answers over
HTTP. Nothing is mocked.
"""

from __future__ import annotations

import pathlib
import secrets
import threading
import uuid
from collections.abc import Iterator

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from tests.conftest import EVENTLOG_DIR
from trusted_launch.client.challenge import verify_vm
from trusted_launch.client.errors import VMVerificationFailed
from trusted_launch.client.launch_token import create_launch_token
from trusted_launch.compute.errors import (
    AttestationRefused,
    ImageDigestMismatch,
    ReleaseUnusable,
    TTPUnreachable,
)
from trusted_launch.compute.launch import check_image_digest
from trusted_launch.compute.ttp_client import TTPClient
from trusted_launch.crypto.digest import digest_file
from trusted_launch.crypto.nonce import encode_nonce, read_nonce_file
from trusted_launch.crypto.token import ImageDigest, LaunchToken, seal_token
from trusted_launch.guest.agent import ChallengeServer
from trusted_launch.guest.identity import load_identity
from trusted_launch.sandbox.hosts import SandboxHost, start_host, ttp_client
from trusted_launch.sandbox.pki import CertificateAuthority
from trusted_launch.sandbox.swtpm import extend_pcr
from trusted_launch.sandbox.ttp_process import TTPServer, start_ttp

PROFILES_DIR = pathlib.Path(__file__).resolve().parents[2] / "examples" / "profiles"
TRUSTED_LOG = EVENTLOG_DIR / "secureboot_binary_bios_measurements"
UNTRUSTED_LOG = EVENTLOG_DIR / "coreos_36_shielded_vm_no_secure_boot_eventlog"

pytestmark = pytest.mark.swtpm


@pytest.fixture(scope="module")
def ttp(ttp_database_url: str, swtpm_state_cache,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[TTPServer]:
    directory = tmp_path_factory.mktemp("protocol-ttp")
    swtpm_state_cache.state(0)
    tls_ca = CertificateAuthority(directory / "tls-ca")
    with start_ttp(directory / "ttp", tls_ca=tls_ca, database_url=ttp_database_url,
                   ek_ca_files=swtpm_state_cache.ca.ek_ca_certs,
                   profiles_dir=PROFILES_DIR) as server:
        yield server


def _client(ttp: TTPServer, url: str | None = None) -> TTPClient:
    return ttp_client(ttp, url)


def _start_host(name: str, index: int, event_log: pathlib.Path, ttp: TTPServer,
                states) -> SandboxHost:
    return start_host(name, states.state(index), states.ca, event_log, ttp)


@pytest.fixture(scope="module")
def hosts(ttp: TTPServer, swtpm_state_cache) -> Iterator[dict[str, SandboxHost]]:
    suffix = secrets.token_hex(3)
    started = {
        "trusted": _start_host(f"trusted-{suffix}", 0, TRUSTED_LOG, ttp, swtpm_state_cache),
        "untrusted": _start_host(f"untrusted-{suffix}", 1, UNTRUSTED_LOG, ttp,
                                 swtpm_state_cache),
    }
    yield started
    for host in started.values():
        host.close()


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("image") / "image.raw"
    path.write_bytes(secrets.token_bytes(1 << 20))
    return path


@pytest.fixture
def tenant(ttp: TTPServer, image: pathlib.Path, tmp_path: pathlib.Path):
    """make(profile) -> (token, N): a fresh launch token for ``image``."""
    digest = digest_file(image, "sha512")

    def make(profile: str = "high", image_digest: ImageDigest = digest) -> tuple[str, bytes]:
        token, nonce_path = create_launch_token(ttp.url, profile, image_digest,
                                                ca_file=str(ttp.ca_file), nonce_dir=tmp_path)
        return token, read_nonce_file(nonce_path)

    return make


def test_trusted_host_accepted_and_nonce_released(hosts, ttp, tenant, image):
    token, nonce = tenant("high")
    released = hosts["trusted"].runner.release(_client(ttp), token=token,
                                               launch_id=str(uuid.uuid4()))
    assert released.nonce == nonce
    check_image_digest(released.image_digest, digest_file(image, "sha512").value)


def test_stricter_host_satisfies_weaker_request(hosts, ttp, tenant):
    token, nonce = tenant("medium")
    released = hosts["trusted"].runner.release(_client(ttp), token=token,
                                               launch_id=str(uuid.uuid4()))
    assert released.nonce == nonce


def test_event_log_outside_profile_refused(hosts, ttp, tenant):
    token, _ = tenant("high")
    with pytest.raises(AttestationRefused) as refused:
        hosts["untrusted"].runner.release(_client(ttp), token=token,
                                          launch_id=str(uuid.uuid4()))
    assert refused.value.check == "profile_policy"
    assert "Secure Boot" in refused.value.reason


def test_untrusted_host_meets_weaker_profile(hosts, ttp, tenant):
    token, nonce = tenant("low")
    released = hosts["untrusted"].runner.release(_client(ttp), token=token,
                                                 launch_id=str(uuid.uuid4()))
    assert released.nonce == nonce


def test_token_replayed_to_second_launch_refused(hosts, ttp, tenant):
    token, _ = tenant("high")
    runner = hosts["trusted"].runner
    runner.release(_client(ttp), token=token, launch_id=str(uuid.uuid4()))
    with pytest.raises(AttestationRefused) as refused:
        runner.release(_client(ttp), token=token, launch_id=str(uuid.uuid4()))
    assert refused.value.check == "token_replayed"


def test_certify_evidence_replayed_into_another_launch_refused(hosts, ttp, tenant):
    token, _ = tenant("high")
    _, body = hosts["trusted"].runner.evidence(token=token, launch_id=str(uuid.uuid4()))
    with pytest.raises(AttestationRefused) as refused:
        _client(ttp).attest(dict(body, launch_id=str(uuid.uuid4())))
    assert refused.value.check == "certify_binding"


def test_token_for_another_ttp_key_refused(hosts, ttp, image):
    token = seal_token(
        LaunchToken(nonce=secrets.token_bytes(32), profile="high",
                    image_digest=digest_file(image, "sha512"), expires_at=2**31),
        X25519PrivateKey.generate().public_key(), "0123456789abcdef")
    with pytest.raises(AttestationRefused) as refused:
        hosts["trusted"].runner.release(_client(ttp), token=token,
                                        launch_id=str(uuid.uuid4()))
    assert refused.value.check == "token_key_unknown"


def test_tampered_image_digest_refused_by_host(hosts, ttp, tenant, image, tmp_path):
    token, _ = tenant("high")
    released = hosts["trusted"].runner.release(_client(ttp), token=token,
                                               launch_id=str(uuid.uuid4()))
    tampered = tmp_path / "tampered.raw"
    data = bytearray(image.read_bytes())
    data[len(data) // 2] ^= 0x01
    tampered.write_bytes(bytes(data))
    with pytest.raises(ImageDigestMismatch):
        check_image_digest(released.image_digest, digest_file(tampered, "sha512").value)


def test_ak_of_another_host_refused(hosts, ttp, tenant):
    token, _ = tenant("high")
    _, body = hosts["trusted"].runner.evidence(token=token, launch_id=str(uuid.uuid4()))
    with pytest.raises(AttestationRefused) as refused:
        _client(ttp).attest(dict(body, host=hosts["untrusted"].name))
    assert refused.value.check == "ak_certificate"


def test_ttp_unreachable_refused(hosts, tenant):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = f"https://127.0.0.1:{sock.getsockname()[1]}"
    token, _ = tenant("high")
    with pytest.raises(TTPUnreachable):
        hosts["trusted"].runner.release(TTPClient(closed, connect_retries=0), token=token,
                                        launch_id=str(uuid.uuid4()))


def test_wrong_tls_certificate_refused(hosts, ttp, tenant, tmp_path):
    other_ca = CertificateAuthority(tmp_path / "other-ca", name="unrelated CA")
    token, _ = tenant("high")
    client = TTPClient(ttp.url, ca_file=str(other_ca.cert_file), connect_retries=0)
    with pytest.raises(TTPUnreachable, match="TLS"):
        hosts["trusted"].runner.release(client, token=token, launch_id=str(uuid.uuid4()))


def test_pcrs_changed_after_certify_decryption_refused_by_tpm(swtpm_state_cache, ttp,
                                                              tenant):
    host = _start_host(f"drifting-{secrets.token_hex(3)}", 2, TRUSTED_LOG, ttp,
                       swtpm_state_cache)
    try:
        token, _ = tenant("high")
        pending = host.runner.attest(_client(ttp), token=token, launch_id=str(uuid.uuid4()))
        extend_pcr(host.device, 4, b"a boot loader the TTP never saw")
        with pytest.raises(ReleaseUnusable, match="PCRs no longer match"):
            host.runner.open(pending)
    finally:
        host.close()


@pytest.fixture
def guest(hosts, ttp, tenant, tmp_path) -> Iterator[tuple[str, str, bytes]]:
    """(address, server id, tenant's N) of a guest agent fed the released N."""
    token, nonce = tenant("high")
    server_id = str(uuid.uuid4())
    released = hosts["trusted"].runner.release(_client(ttp), token=token, launch_id=server_id)
    drive = tmp_path / "config-drive" / "trusted_launch"
    drive.mkdir(parents=True)
    (drive / "nonce").write_bytes(encode_nonce(released.nonce))
    host_key = tmp_path / "ssh_host_ed25519_key.pub"
    host_key.write_bytes(Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH) + b" vm\n")
    identity = load_identity(nonce_file=drive / "nonce", server_id=server_id,
                             ssh_host_key=host_key)
    server = ChallengeServer(("127.0.0.1", 0), identity)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", server_id, nonce
    finally:
        server.shutdown()
        server.server_close()


def test_client_challenge_passes_with_right_nonce(guest):
    address, server_id, nonce = guest
    vm = verify_vm(address, server_id, nonce)
    assert vm.ssh_host_key_fingerprint.startswith("SHA256:")


def test_client_challenge_fails_with_wrong_nonce(guest):
    address, server_id, _ = guest
    with pytest.raises(VMVerificationFailed):
        verify_vm(address, server_id, secrets.token_bytes(32))


def test_decisions_are_audited_without_the_nonce(hosts, ttp, tenant):
    token, nonce = tenant("high")
    pending = hosts["trusted"].runner.attest(_client(ttp), token=token,
                                             launch_id=str(uuid.uuid4()))
    record = ttp.admin("GET", f"/v1/attestations/{pending.attestation_id}")
    assert record.status_code == 200
    assert record.json()["verdict"] == "trusted"
    assert nonce.hex() not in record.text
    assert nonce.hex() not in ttp.log()
