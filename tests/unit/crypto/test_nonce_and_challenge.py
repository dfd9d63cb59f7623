"""Nonce file encodings and the VM challenge MAC."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import struct

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from trusted_launch.crypto.errors import InvalidNonce
from trusted_launch.crypto.nonce import decode_nonce, encode_nonce, read_nonce_file
from trusted_launch.crypto.vm_challenge import challenge_mac, ssh_fingerprint

NONCE = bytes(range(32))


@pytest.mark.parametrize("data", [
    NONCE, NONCE.hex().encode(), NONCE.hex().encode() + b"\n",
    base64.b64encode(NONCE), base64.urlsafe_b64encode(NONCE).rstrip(b"="),
    encode_nonce(NONCE),
])
def test_decode_nonce_forms(data):
    assert decode_nonce(data) == NONCE


@pytest.mark.parametrize("data", [b"", bytes(31), bytes(33), b"z" * 64, b"!" * 44])
def test_decode_nonce_rejects(data):
    with pytest.raises(InvalidNonce):
        decode_nonce(data)


def test_read_nonce_file_errors_do_not_leak(tmp_path):
    path = tmp_path / "nonce"
    path.write_bytes(NONCE.hex().encode()[:-2])
    with pytest.raises(InvalidNonce, match=str(path)) as excinfo:
        read_nonce_file(path)
    assert NONCE.hex()[:40] not in str(excinfo.value)
    path.write_bytes(b"0" * 1000)
    with pytest.raises(InvalidNonce, match="larger than"):
        read_nonce_file(path)


def test_challenge_mac_matches_spec():
    challenge, server_id, fingerprint = os.urandom(32), "srv-1", "SHA256:abc"
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
               info=b"trusted-launch/v1 vm-challenge").derive(NONCE)
    message = b"".join(struct.pack(">H", len(p)) + p
                       for p in (challenge, server_id.encode(), fingerprint.encode()))
    assert challenge_mac(NONCE, challenge, server_id, fingerprint) == hmac.new(
        key, message, hashlib.sha256).digest()
    assert challenge_mac(NONCE, challenge, server_id, fingerprint) != challenge_mac(
        NONCE, challenge, server_id, "SHA256:abd")


def test_ssh_fingerprint_of_known_key():
    blob = struct.pack(">I", 11) + b"ssh-ed25519" + struct.pack(">I", 32) + bytes(32)
    line = "ssh-ed25519 " + base64.b64encode(blob).decode() + " root@vm"
    want = "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    assert ssh_fingerprint(line) == want
    for bad in ("", "ssh-ed25519", "ssh-rsa " + base64.b64encode(blob).decode(),
                "ssh-ed25519 !!!"):
        with pytest.raises(ValueError, match="SSH public key"):
            ssh_fingerprint(bad)
