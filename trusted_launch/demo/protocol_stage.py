"""Demo stage 2: the protocol on two swtpm hosts and a TTP over HTTPS.

host-a boots a Secure Boot firmware log that meets profile "high"; host-b
boots a log without Secure Boot. Both are enrolled at the TTP through the real
EK-certificate / credential-activation exchange. The tenant makes tokens with
the client library; the hosts run the host side of the protocol; the guest
agent answers the tenant's challenge with the released N.
"""

from __future__ import annotations

import contextlib
import pathlib
import secrets
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

from trusted_launch.client.challenge import verify_vm
from trusted_launch.client.launch_token import create_launch_token
from trusted_launch.compute.launch import StepTimer, check_image_digest
from trusted_launch.compute.ttp_client import TTPClient, check_ttp_url
from trusted_launch.crypto.digest import digest_file
from trusted_launch.crypto.nonce import encode_nonce
from trusted_launch.crypto.token import ImageDigest, LaunchToken, seal_token
from trusted_launch.demo.report import ACCEPTED, REFUSED, Recorder, ScenarioResult
from trusted_launch.guest.agent import ChallengeServer
from trusted_launch.guest.identity import load_identity
from trusted_launch.sandbox.hosts import SandboxHost, running_host
from trusted_launch.sandbox.pki import CertificateAuthority
from trusted_launch.sandbox.swtpm import StateCache, extend_pcr
from trusted_launch.sandbox.ttp_process import TTPServer, start_ttp

TRUSTED_LOG = "secureboot_binary_bios_measurements"
UNTRUSTED_LOG = "coreos_36_shielded_vm_no_secure_boot_eventlog"


def run(recorder: Recorder, data_dir: pathlib.Path, profiles_dir: pathlib.Path) -> None:
    """Set up the parties, then run every protocol scenario."""
    with tempfile.TemporaryDirectory(prefix="trusted-launch-demo-") as tmp, \
            _environment(pathlib.Path(tmp), data_dir, profiles_dir) as env:
        _scenarios(recorder, env, pathlib.Path(tmp))


@dataclass
class Environment:
    ttp: TTPServer
    hosts: dict[str, SandboxHost]
    image: pathlib.Path

    _clients: dict[str, TTPClient] = field(default_factory=dict)

    def client(self, url: str | None = None) -> TTPClient:
        """One client (one keep-alive TLS session) per TTP URL, as a host keeps it."""
        url = url or self.ttp.url
        if url not in self._clients:
            self._clients[url] = TTPClient(url, ca_file=str(self.ttp.ca_file), timeout=10,
                                           connect_retries=0)
        return self._clients[url]


@contextlib.contextmanager
def _environment(tmp: pathlib.Path, data_dir: pathlib.Path,
                 profiles_dir: pathlib.Path) -> Iterator[Environment]:
    states = StateCache(tmp / "tpm-states")
    tls_ca = CertificateAuthority(tmp / "tls-ca")
    states.state(0)  # manufacturing the first TPM also makes the EK CA
    with contextlib.ExitStack() as stack:
        ttp = stack.enter_context(start_ttp(tmp / "ttp", tls_ca=tls_ca,
                                            ek_ca_files=states.ca.ek_ca_certs,
                                            profiles_dir=profiles_dir))
        hosts = {}
        for index, (name, log) in enumerate((("host-a", TRUSTED_LOG),
                                             ("host-b", UNTRUSTED_LOG))):
            hosts[name] = stack.enter_context(running_host(
                name, states.state(index), states.ca, data_dir / "eventlogs" / log, ttp,
                pool_size=12))
        image = tmp / "image.qcow2"
        image.write_bytes(secrets.token_bytes(4 << 20))
        yield Environment(ttp, hosts, image)


def _scenarios(recorder: Recorder, env: Environment, tmp: pathlib.Path) -> None:
    image_digest = digest_file(env.image, "sha512")
    nonce_dir = tmp / "tenant-nonces"
    host_a = env.hosts["host-a"]

    def token_for(profile: str, digest: ImageDigest = image_digest) -> tuple[str, bytes]:
        token, path = create_launch_token(env.ttp.url, profile, digest,
                                          ca_file=str(env.ttp.ca_file), nonce_dir=nonce_dir)
        return token, path.read_bytes()

    token, nonce_file_content = token_for("high")
    released = None
    with recorder.scenario("protocol:trusted_launch_accepted", ACCEPTED) as result:
        released = _launch(host_a, env, token, result)
        result.reason = f"{host_a.name} attested for profile high; N released and image checked"
    _challenge_scenarios(recorder, released, tmp, nonce_file_content)

    with recorder.scenario("protocol:untrusted_host_refused", REFUSED) as result:
        _launch(env.hosts["host-b"], env, token_for("high")[0], result)
    with recorder.scenario("protocol:weaker_profile_on_untrusted_host", ACCEPTED) as result:
        _launch(env.hosts["host-b"], env, token_for("low")[0], result)
        result.reason = "host-b meets profile low (a well-formed measured boot)"
    with recorder.scenario("protocol:tampered_image_refused", REFUSED) as result:
        tampered = tmp / "tampered.qcow2"
        original = env.image.read_bytes()
        tampered.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))  # always differs
        _launch(host_a, env, token_for("high")[0], result, image=tampered)
    with recorder.scenario("protocol:token_replayed_refused", REFUSED) as result:
        _launch(host_a, env, token, result)
    with recorder.scenario("protocol:token_for_other_ttp_key_refused", REFUSED) as result:
        _launch(host_a, env, _token_for_unknown_key(image_digest), result)
    with recorder.scenario("protocol:certify_evidence_replayed_refused", REFUSED) as result:
        _replay_certify(host_a, env, token_for("high")[0])
    with recorder.scenario("protocol:pcr_changed_decrypt_refused", REFUSED) as result:
        _pcr_changed(env.hosts["host-b"], env, token_for("low")[0], result)
    with recorder.scenario("protocol:ttp_not_on_allow_list_refused", REFUSED):
        check_ttp_url("https://169.254.169.254", allowed=[env.ttp.url])
    with recorder.scenario("protocol:ttp_unreachable_refused", REFUSED) as result:
        _launch(host_a, env, token_for("high")[0], result,
                client=env.client(f"https://127.0.0.1:{_closed_port()}"))


def _launch(host: SandboxHost, env: Environment, token: str, result: ScenarioResult, *,
            image: pathlib.Path | None = None, client: TTPClient | None = None) -> bytes:
    """Steps 5-12 on ``host``; the released N (only kept in memory)."""
    timer = StepTimer()
    try:
        secrets_ = host.runner.release(client or env.client(), token=token,
                                       launch_id=str(uuid.uuid4()), timer=timer)
        image_digest = digest_file(image or env.image, secrets_.image_digest.algorithm)
        check_image_digest(secrets_.image_digest, image_digest.value)
    finally:
        result.steps_ms = dict(timer.steps)
    return secrets_.nonce


def _challenge_scenarios(recorder: Recorder, nonce: bytes | None, tmp: pathlib.Path,
                         tenant_nonce: bytes) -> None:
    """Step 15: the guest agent, fed the released N, answers the tenant."""
    server_id = str(uuid.uuid4())
    drive = tmp / "config-drive" / "trusted_launch"
    drive.mkdir(parents=True)
    (drive / "nonce").write_bytes(encode_nonce(nonce or bytes(32)))
    host_key = tmp / "ssh_host_ed25519_key.pub"
    host_key.write_text(_ssh_host_key_line())
    identity = load_identity(nonce_file=drive / "nonce", server_id=server_id,
                             ssh_host_key=host_key)
    from trusted_launch.crypto.nonce import decode_nonce

    tenant_n = decode_nonce(tenant_nonce)
    with _agent(identity) as address:
        with recorder.scenario("protocol:vm_challenge_verified", ACCEPTED) as result:
            vm = verify_vm(address, server_id, tenant_n)
            result.reason = f"VM proved it holds N; SSH host key {vm.ssh_host_key_fingerprint}"
        with recorder.scenario("protocol:wrong_nonce_challenge_rejected", REFUSED):
            verify_vm(address, server_id, secrets.token_bytes(32))


@contextlib.contextmanager
def _agent(identity) -> Iterator[str]:
    import threading

    server = ChallengeServer(("127.0.0.1", 0), identity)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _replay_certify(host: SandboxHost, env: Environment, token: str) -> None:
    """Evidence certified for one launch id, presented for another."""
    _, body = host.runner.evidence(token=token, launch_id=str(uuid.uuid4()))
    env.client().attest(dict(body, launch_id=str(uuid.uuid4())))


def _pcr_changed(host: SandboxHost, env: Environment, token: str, result: ScenarioResult) -> None:
    """The host leaves its measured state between attestation and decryption."""
    pending = host.runner.attest(env.client(), token=token, launch_id=str(uuid.uuid4()))
    extend_pcr(host.device, 7, b"demo: host state changed after certify")
    host.runner.open(pending)


def _token_for_unknown_key(digest: ImageDigest) -> str:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    other = X25519PrivateKey.generate().public_key()
    token = LaunchToken(nonce=secrets.token_bytes(32), profile="high", image_digest=digest,
                        expires_at=2**31)
    return seal_token(token, other, "00" * 8)


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ssh_host_key_line() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    public = Ed25519PrivateKey.generate().public_key()
    return public.public_bytes(serialization.Encoding.OpenSSH,
                               serialization.PublicFormat.OpenSSH).decode() + " demo-vm\n"
