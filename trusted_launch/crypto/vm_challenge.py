"""Step 15: the MAC with which a VM proves that it knows the launch nonce N.

``mac = HMAC-SHA256(HKDF-SHA256(N, info="trusted-launch/v1 vm-challenge"),
u16-prefixed challenge || server id || SSH host key fingerprint)``. Because the
fingerprint is inside the MAC, the answer also authenticates the VM's SSH host
key to the tenant.

Mutual authentication (the tenant also proves N to the VM) uses
``K = HKDF-SHA256(N, info="trusted-launch/v1 mutual")``: the client sends
``c1``; the VM answers ``c2`` and ``mac_vm = HMAC(K, "vm" | c1 | c2 | server id |
fingerprint)``; the client answers ``mac_client = HMAC(K, "client" | ...)`` over
the same fields. Both then hold ``session_key = HKDF(K, salt=c1 || c2,
info="trusted-launch/v1 session")``; every later message carries
``HMAC(session_key, purpose | session id | counter | fields)``. All fields are
u16-length-prefixed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from trusted_launch.crypto._encoding import length_prefixed
from trusted_launch.crypto.errors import InvalidNonce

CHALLENGE_INFO = b"trusted-launch/v1 vm-challenge"
MUTUAL_INFO = b"trusted-launch/v1 mutual"
SESSION_INFO = b"trusted-launch/v1 session"
MIN_CHALLENGE = 16
MAX_CHALLENGE = 64


def challenge_key(nonce: bytes) -> bytes:
    """The MAC key derived from N (N itself is never used directly)."""
    if len(nonce) != 32:
        raise InvalidNonce("a nonce must be 32 bytes")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=CHALLENGE_INFO).derive(nonce)


def challenge_mac(nonce: bytes, challenge: bytes, server_id: str, fingerprint: str) -> bytes:
    """The 32-byte answer to ``challenge`` for this server and SSH host key."""
    message = length_prefixed(challenge, server_id.encode("utf-8"), fingerprint.encode("utf-8"))
    return hmac.new(challenge_key(nonce), message, hashlib.sha256).digest()


def ssh_fingerprint(public_key_line: str) -> str:
    """OpenSSH ``SHA256:<base64 no padding>`` of an ``ssh-xxx AAAA... [comment]`` line."""
    parts = public_key_line.strip().split()
    if len(parts) < 2:
        raise ValueError("SSH public key line must be '<type> <base64 blob> [comment]'")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except ValueError:
        raise ValueError("SSH public key blob is not base64") from None
    if len(blob) < 4 or not blob[4:].startswith(parts[0].encode("ascii", "replace")):
        raise ValueError(f"SSH public key blob does not hold a {parts[0]!r} key")
    digest = hashlib.sha256(blob).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def mutual_key(nonce: bytes) -> bytes:
    """K of the mutual exchange, derived from N (independent of the challenge key)."""
    if len(nonce) != 32:
        raise InvalidNonce("a nonce must be 32 bytes")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=MUTUAL_INFO).derive(nonce)


def mutual_mac(key: bytes, role: str, c1: bytes, c2: bytes, server_id: str,
               fingerprint: str) -> bytes:
    """``HMAC(K, role | c1 | c2 | server id | fingerprint)``; role is "vm" or "client"."""
    if role not in ("vm", "client"):
        raise ValueError(f"role {role!r} must be 'vm' or 'client'")
    message = length_prefixed(role.encode("ascii"), c1, c2, server_id.encode("utf-8"),
                              fingerprint.encode("utf-8"))
    return hmac.new(key, message, hashlib.sha256).digest()


def session_key(key: bytes, c1: bytes, c2: bytes) -> bytes:
    """The session key both ends derive after mutual authentication."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=c1 + c2,
                info=SESSION_INFO).derive(key)


def session_mac(key: bytes, purpose: str, session_id: bytes, counter: int,
                *fields: bytes) -> bytes:
    """``HMAC(session key, purpose | session id | counter (u64) | fields...)``."""
    if not 0 <= counter < 2**64:
        raise ValueError("session counter out of range")
    message = length_prefixed(purpose.encode("ascii"), session_id,
                              counter.to_bytes(8, "big"), *fields)
    return hmac.new(key, message, hashlib.sha256).digest()
