"""The MACs and keys of mutual tenant <-> VM authentication."""

from __future__ import annotations

import hashlib
import hmac
import struct

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from trusted_launch.crypto.errors import InvalidNonce
from trusted_launch.crypto.vm_challenge import (
    challenge_key,
    mutual_key,
    mutual_mac,
    session_key,
    session_mac,
)

NONCE = bytes(range(32))
C1, C2 = b"\x01" * 32, b"\x02" * 32
FP = "SHA256:abc"


def prefixed(*parts: bytes) -> bytes:
    return b"".join(struct.pack(">H", len(p)) + p for p in parts)


def test_mutual_mac_matches_the_spec():
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
               info=b"trusted-launch/v1 mutual").derive(NONCE)
    assert mutual_key(NONCE) == key
    assert key != challenge_key(NONCE)  # the one-way challenge key is a different key
    expected = hmac.new(key, prefixed(b"vm", C1, C2, b"server-1", FP.encode()),
                        hashlib.sha256).digest()
    assert mutual_mac(key, "vm", C1, C2, "server-1", FP) == expected


def test_roles_and_fields_are_separated():
    key = mutual_key(NONCE)
    vm = mutual_mac(key, "vm", C1, C2, "server-1", FP)
    assert vm != mutual_mac(key, "client", C1, C2, "server-1", FP)
    assert vm != mutual_mac(key, "vm", C2, C1, "server-1", FP)
    assert vm != mutual_mac(key, "vm", C1, C2, "server-2", FP)
    assert vm != mutual_mac(key, "vm", C1, C2, "server-1", "SHA256:abd")
    # length prefixes: moving a byte between c1 and c2 changes the MAC
    assert vm != mutual_mac(key, "vm", C1 + b"\x02", C2[1:], "server-1", FP)
    with pytest.raises(ValueError, match="role"):
        mutual_mac(key, "tenant", C1, C2, "server-1", FP)
    with pytest.raises(InvalidNonce):
        mutual_key(b"short")


def test_session_key_and_messages():
    key = mutual_key(NONCE)
    shared = session_key(key, C1, C2)
    assert shared == HKDF(algorithm=hashes.SHA256(), length=32, salt=C1 + C2,
                          info=b"trusted-launch/v1 session").derive(key)
    assert shared != session_key(key, C1, b"\x03" * 32)
    mac = session_mac(shared, "authorize-ssh-key", C2, 1, b"ssh-ed25519 AAAA")
    assert mac == hmac.new(shared, prefixed(b"authorize-ssh-key", C2, (1).to_bytes(8, "big"),
                                            b"ssh-ed25519 AAAA"), hashlib.sha256).digest()
    assert mac != session_mac(shared, "authorize-ssh-key", C2, 2, b"ssh-ed25519 AAAA")
    assert mac != session_mac(shared, "ssh-key-authorized", C2, 1, b"ssh-ed25519 AAAA")
    with pytest.raises(ValueError, match="counter"):
        session_mac(shared, "x", C2, -1)
