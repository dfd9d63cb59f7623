"""Mutual authentication with a VM over N, then an authenticated session.

The client sends ``c1``; the VM must answer with ``mac_vm`` over (c1, its
``c2``, server id, SSH host key fingerprint) under a key derived from N, which
a phishing VM cannot compute. Only then does the client send ``mac_client``,
proving N to the VM. Both derive a session key; session messages carry a
counter and a MAC, and so do the VM's answers.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, field

from trusted_launch.client.challenge import (
    VerifiedVM,
    _ask,
    _check_host_key,
    _string_field,
)
from trusted_launch.client.errors import VMVerificationFailed
from trusted_launch.crypto._encoding import b64url_decode, b64url_encode
from trusted_launch.crypto.vm_challenge import (
    mutual_key,
    mutual_mac,
    session_key,
    session_mac,
    ssh_fingerprint,
)

C1_SIZE = 32


@dataclass
class MutualSession:
    """A mutually authenticated session with one VM; ``key`` never leaves the process."""

    address: str
    vm: VerifiedVM
    session_id: bytes
    key: bytes = field(repr=False)
    timeout: float = 5
    counter: int = 0

    def authorize_ssh_key(self, public_key_line: str) -> str:
        """Have the VM add ``public_key_line`` to its authorized_keys; its fingerprint."""
        line = public_key_line.strip()
        fingerprint = ssh_fingerprint(line)
        self.counter += 1
        mac = session_mac(self.key, "authorize-ssh-key", self.session_id, self.counter,
                          line.encode("utf-8"))
        answer = _ask(self.address, {"session": b64url_encode(self.session_id),
                                     "counter": self.counter, "ssh_public_key": line,
                                     "mac": b64url_encode(mac)},
                      self.timeout, "/v1/mutual/authorized-keys")
        expected = session_mac(self.key, "ssh-key-authorized", self.session_id, self.counter,
                               fingerprint.encode())
        if answer.get("counter") != self.counter or not hmac.compare_digest(
                _mac_field(answer, "mac"), expected):
            raise VMVerificationFailed("the VM's confirmation of the SSH key is not "
                                       "authenticated by the session")
        return fingerprint


def mutual_authenticate(address: str, server_id: str, nonce: bytes, *,
                        expected_fingerprint: str | None = None,
                        timeout: float = 5) -> MutualSession:
    """Run both proofs of N with the agent at ``HOST:PORT``; the open session."""
    key = mutual_key(nonce)
    c1 = secrets.token_bytes(C1_SIZE)
    answer = _ask(address, {"server_id": server_id, "c1": b64url_encode(c1)}, timeout,
                  "/v1/mutual/start")
    vm, c2 = _verify_vm_proof(answer, key, c1, server_id, address)
    if expected_fingerprint is not None and not hmac.compare_digest(
            vm.ssh_host_key_fingerprint.encode(), expected_fingerprint.encode()):
        raise VMVerificationFailed(f"VM SSH host key is {vm.ssh_host_key_fingerprint}, "
                                   f"expected {expected_fingerprint}")
    mac_client = mutual_mac(key, "client", c1, c2, server_id, vm.ssh_host_key_fingerprint)
    finished = _ask(address, {"c2": b64url_encode(c2), "mac_client": b64url_encode(mac_client)},
                    timeout, "/v1/mutual/finish")
    shared = session_key(key, c1, c2)
    if _string_field(finished, "session") != b64url_encode(c2) or not hmac.compare_digest(
            _mac_field(finished, "mac"), session_mac(shared, "finished", c2, 0)):
        raise VMVerificationFailed("the VM did not confirm the session key")
    return MutualSession(address, vm, c2, shared, timeout)


def _verify_vm_proof(answer: dict, key: bytes, c1: bytes, server_id: str,
                     address: str) -> tuple[VerifiedVM, bytes]:
    if _string_field(answer, "server_id") != server_id:
        raise VMVerificationFailed(
            f"VM at {address} answered for server {answer['server_id']!r}, not {server_id!r}")
    fingerprint = _string_field(answer, "ssh_host_key_fingerprint")
    c2 = _mac_field(answer, "c2")
    expected = mutual_mac(key, "vm", c1, c2, server_id, fingerprint)
    if not hmac.compare_digest(_mac_field(answer, "mac_vm"), expected):
        raise VMVerificationFailed(
            f"VM at {address} does not prove knowledge of the launch nonce (MAC mismatch)")
    host_key = _check_host_key(answer, fingerprint)
    return VerifiedVM(server_id, fingerprint, host_key), c2


def _mac_field(answer: dict, name: str) -> bytes:
    try:
        value = b64url_decode(_string_field(answer, name))
    except ValueError:
        raise VMVerificationFailed(f"VM answer '{name}' is not base64url") from None
    if len(value) != 32:
        raise VMVerificationFailed(f"VM answer '{name}' is not 32 bytes")
    return value
