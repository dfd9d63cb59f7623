"""Step 15: challenge a VM to prove it knows N, and learn its SSH host key.

The VM's agent answers ``POST /v1/challenge`` with its server id, its SSH host
key fingerprint (and key) and an HMAC over a fresh challenge keyed from N. A
match proves the answering VM was launched with this tenant's token, and
authenticates its SSH host key so the tenant can pin it.
"""

from __future__ import annotations

import hmac
import http.client
import json
import secrets
from dataclasses import dataclass

from trusted_launch.client.errors import VMVerificationFailed
from trusted_launch.crypto._encoding import b64url_decode, b64url_encode
from trusted_launch.crypto.vm_challenge import challenge_mac, ssh_fingerprint

CHALLENGE_SIZE = 32
MAX_ANSWER_BYTES = 16 * 1024


@dataclass(frozen=True)
class VerifiedVM:
    """A VM that proved knowledge of N; its SSH host key is authenticated."""

    server_id: str
    ssh_host_key_fingerprint: str
    ssh_host_key: str | None = None


def verify_vm(address: str, server_id: str, nonce: bytes, *,
              expected_fingerprint: str | None = None, timeout: float = 5) -> VerifiedVM:
    """Challenge the agent at ``HOST:PORT``; raise VMVerificationFailed unless it proves N."""
    challenge = secrets.token_bytes(CHALLENGE_SIZE)
    answer = _ask(address, {"challenge": b64url_encode(challenge), "server_id": server_id},
                  timeout)
    fingerprint = _string_field(answer, "ssh_host_key_fingerprint")
    if _string_field(answer, "server_id") != server_id:
        raise VMVerificationFailed(
            f"VM at {address} answered for server {answer['server_id']!r}, not {server_id!r}")
    _check_mac(answer, challenge, server_id, fingerprint, nonce, address)
    host_key = _check_host_key(answer, fingerprint)
    if expected_fingerprint is not None and not hmac.compare_digest(
            fingerprint.encode(), expected_fingerprint.encode()):
        raise VMVerificationFailed(
            f"VM SSH host key is {fingerprint}, expected {expected_fingerprint}")
    return VerifiedVM(server_id, fingerprint, host_key)


def known_hosts_line(address: str, vm: VerifiedVM) -> str | None:
    """A ``known_hosts`` line pinning the verified key (None if the key was not sent)."""
    if vm.ssh_host_key is None:
        return None
    host = split_address(address)[0]
    key_type, blob = vm.ssh_host_key.split()[:2]
    return f"{host} {key_type} {blob}"


def split_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[v6]:PORT`` -> (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"address {address!r} must be HOST:PORT")
    return host.strip("[]"), int(port)


def _ask(address: str, body: dict, timeout: float, path: str = "/v1/challenge") -> dict:
    host, port = split_address(address)
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("POST", path, body=json.dumps(body).encode(),
                           headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        payload = response.read(MAX_ANSWER_BYTES + 1)
    except OSError as exc:
        raise VMVerificationFailed(f"cannot reach the VM agent at {address}: {exc}") from None
    finally:
        connection.close()
    return _decode_answer(address, response.status, payload)


def _decode_answer(address: str, status: int, payload: bytes) -> dict:
    if len(payload) > MAX_ANSWER_BYTES:
        raise VMVerificationFailed(f"VM agent at {address} answered more than "
                                   f"{MAX_ANSWER_BYTES} bytes")
    try:
        answer = json.loads(payload)
    except ValueError:
        answer = None
    if status != 200:
        reason = answer.get("error") if isinstance(answer, dict) else None
        raise VMVerificationFailed(f"VM agent at {address} refused (HTTP {status}): {reason}")
    if not isinstance(answer, dict):
        raise VMVerificationFailed(f"VM agent at {address} did not answer a JSON object")
    return answer


def _string_field(answer: dict, name: str) -> str:
    value = answer.get(name)
    if not isinstance(value, str) or not value:
        raise VMVerificationFailed(f"VM answer has no '{name}' string")
    return value


def _check_mac(answer: dict, challenge: bytes, server_id: str, fingerprint: str,
               nonce: bytes, address: str) -> None:
    try:
        mac = b64url_decode(_string_field(answer, "mac"))
    except ValueError:
        raise VMVerificationFailed("VM answer 'mac' is not base64url") from None
    expected = challenge_mac(nonce, challenge, server_id, fingerprint)
    if not hmac.compare_digest(mac, expected):
        raise VMVerificationFailed(
            f"VM at {address} does not prove knowledge of the launch nonce (MAC mismatch)")


def _check_host_key(answer: dict, fingerprint: str) -> str | None:
    host_key = answer.get("ssh_host_key")
    if host_key is None:
        return None
    try:
        actual = ssh_fingerprint(host_key) if isinstance(host_key, str) else None
    except ValueError:
        actual = None
    if actual != fingerprint:
        raise VMVerificationFailed("VM's SSH host key does not match its authenticated fingerprint")
    return host_key
