"""Release envelope to a bind key: ECC (ZGen stand-in) and RSA (OAEP decrypt stand-in)."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from trusted_launch.crypto.digest import ImageDigest
from trusted_launch.crypto.errors import (
    EnvelopeDecryptionFailed,
    EnvelopeMalformed,
    SealingError,
    UnsupportedBindKey,
)
from trusted_launch.crypto.sealing import (
    OAEP_LABEL,
    ReleasedSecrets,
    open_from_bind_key,
    release_aad,
    seal_to_bind_key,
)

AAD = release_aad("launch-1", b"\x00\x0b" + bytes(32))


@pytest.fixture(scope="module")
def ecc_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(65537, 2048)


def zgen_for(private_key: ec.EllipticCurvePrivateKey):
    """Software stand-in for TPM2_ECDH_ZGen: d * (x, y), return the x coordinate."""
    def zgen(x: bytes, y: bytes) -> bytes:
        peer = ec.EllipticCurvePublicNumbers(
            int.from_bytes(x, "big"), int.from_bytes(y, "big"), ec.SECP256R1()).public_key()
        return private_key.exchange(ec.ECDH(), peer)
    return zgen


def rsa_decrypt_for(private_key: rsa.RSAPrivateKey):
    """Software stand-in for TPM2_RSA_Decrypt with OAEP-SHA256 and the given label."""
    def decrypt(ciphertext: bytes, label: bytes) -> bytes:
        return private_key.decrypt(ciphertext, padding.OAEP(
            mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=label))
    return decrypt


def secrets_(image_key: bytes | None = None) -> ReleasedSecrets:
    return ReleasedSecrets(os.urandom(32), ImageDigest("sha512", os.urandom(64)), image_key)


def open_ecc(envelope: bytes, key, aad: bytes = AAD) -> ReleasedSecrets:
    return open_from_bind_key(envelope, aad=aad, ecdh_zgen=zgen_for(key))


def open_rsa(envelope: bytes, key, aad: bytes = AAD) -> ReleasedSecrets:
    return open_from_bind_key(envelope, aad=aad, rsa_decrypt=rsa_decrypt_for(key))


@pytest.mark.parametrize("image_key", [None, os.urandom(32)], ids=["no-key", "key"])
def test_ecc_round_trip(ecc_key, image_key):
    released = secrets_(image_key)
    envelope = seal_to_bind_key(ecc_key.public_key(), released, aad=AAD)
    assert envelope[:2] == b"\x01\x01"
    assert open_ecc(envelope, ecc_key) == released


@pytest.mark.parametrize("image_key", [None, os.urandom(16)], ids=["no-key", "key"])
def test_rsa_round_trip(rsa_key, image_key):
    released = secrets_(image_key)
    envelope = seal_to_bind_key(rsa_key.public_key(), released, aad=AAD)
    assert envelope[:2] == b"\x01\x02"
    assert open_rsa(envelope, rsa_key) == released


def test_rsa_label_is_nul_terminated():
    assert OAEP_LABEL == b"trusted-launch/v1 release\x00"


def test_ecc_every_byte_is_authenticated(ecc_key):
    envelope = seal_to_bind_key(ecc_key.public_key(), secrets_(), aad=AAD)
    for index in range(len(envelope)):
        tampered = bytearray(envelope)
        tampered[index] ^= 0x80
        with pytest.raises(SealingError):
            open_ecc(bytes(tampered), ecc_key)


def test_rsa_every_byte_is_authenticated(rsa_key):
    envelope = seal_to_bind_key(rsa_key.public_key(), secrets_(), aad=AAD)
    for index in range(0, len(envelope), 3):
        tampered = bytearray(envelope)
        tampered[index] ^= 0x01
        with pytest.raises(SealingError):
            open_rsa(bytes(tampered), rsa_key)


@pytest.mark.parametrize("other_aad", [
    release_aad("launch-2", b"\x00\x0b" + bytes(32)),
    release_aad("launch-1", b"\x00\x0b" + bytes(31) + b"\x01"),
    b"",
])
def test_wrong_aad_is_refused(ecc_key, rsa_key, other_aad):
    ecc_env = seal_to_bind_key(ecc_key.public_key(), secrets_(), aad=AAD)
    rsa_env = seal_to_bind_key(rsa_key.public_key(), secrets_(), aad=AAD)
    with pytest.raises(EnvelopeDecryptionFailed, match="does not authenticate"):
        open_ecc(ecc_env, ecc_key, other_aad)
    with pytest.raises(EnvelopeDecryptionFailed, match="does not authenticate"):
        open_rsa(rsa_env, rsa_key, other_aad)


def test_wrong_bind_key_is_refused(ecc_key, rsa_key):
    ecc_env = seal_to_bind_key(ecc_key.public_key(), secrets_(), aad=AAD)
    with pytest.raises(EnvelopeDecryptionFailed):
        open_ecc(ecc_env, ec.generate_private_key(ec.SECP256R1()))
    rsa_env = seal_to_bind_key(rsa_key.public_key(), secrets_(), aad=AAD)
    with pytest.raises(EnvelopeDecryptionFailed, match="wrapped key does not decrypt"):
        open_rsa(rsa_env, rsa.generate_private_key(65537, 2048))


def test_ecc_point_off_curve_is_refused_before_zgen(ecc_key):
    envelope = bytearray(seal_to_bind_key(ecc_key.public_key(), secrets_(), aad=AAD))
    envelope[2:66] = bytes(64)
    called = []
    with pytest.raises(EnvelopeMalformed, match="offset 2: ephemeral point is not on P-256"):
        open_from_bind_key(bytes(envelope), aad=AAD,
                           ecdh_zgen=lambda x, y: called.append(1) or b"")
    assert called == []


def test_short_zgen_output_is_left_padded(ecc_key):
    """A TPM may return Z.x without its leading zero byte; the KDF input stays 32 bytes."""
    zgen = zgen_for(ecc_key)
    for _ in range(20000):
        envelope = seal_to_bind_key(ecc_key.public_key(), secrets_(), aad=AAD)
        shared_x = zgen(envelope[2:34], envelope[34:66])
        if shared_x[0] == 0:
            break
    else:
        pytest.fail("no ephemeral key with a leading zero in Z.x")
    released = open_from_bind_key(envelope, aad=AAD, ecdh_zgen=lambda x, y: shared_x[1:])
    assert len(released.nonce) == 32
    with pytest.raises(SealingError, match="ECDH_ZGen returned 33 bytes"):
        open_from_bind_key(envelope, aad=AAD, ecdh_zgen=lambda x, y: b"\0" + shared_x)


@pytest.mark.parametrize("envelope,problem", [
    (b"", "offset 0"),
    (b"\x02\x01" + bytes(100), "offset 0"),
    (b"\x01\x07" + bytes(100), "offset 1: unknown algorithm 7"),
    (b"\x01\x01" + bytes(50), "truncated"),
    (b"\x01\x02" + bytes(200), "truncated"),
])
def test_malformed_envelopes(ecc_key, rsa_key, envelope, problem):
    with pytest.raises(EnvelopeMalformed, match=problem):
        open_from_bind_key(envelope, aad=AAD, ecdh_zgen=zgen_for(ecc_key),
                           rsa_decrypt=rsa_decrypt_for(rsa_key))


def test_missing_tpm_operation(ecc_key, rsa_key):
    with pytest.raises(UnsupportedBindKey, match="ECDH_ZGen"):
        open_from_bind_key(seal_to_bind_key(ecc_key.public_key(), secrets_(), aad=AAD), aad=AAD)
    with pytest.raises(UnsupportedBindKey, match="RSA decrypt"):
        open_from_bind_key(seal_to_bind_key(rsa_key.public_key(), secrets_(), aad=AAD), aad=AAD)


def test_unsupported_bind_keys():
    with pytest.raises(UnsupportedBindKey, match="secp384r1"):
        seal_to_bind_key(ec.generate_private_key(ec.SECP384R1()).public_key(), secrets_(), aad=AAD)
    with pytest.raises(UnsupportedBindKey, match="RSA-1024"):
        seal_to_bind_key(rsa.generate_private_key(65537, 1024).public_key(), secrets_(), aad=AAD)


def test_released_secrets_bytes_round_trip_and_errors():
    released = secrets_(b"k" * 32)
    assert ReleasedSecrets.from_bytes(released.to_bytes()) == released
    raw = released.to_bytes()
    for bad, problem in [(raw[:-1], "image key length 32"), (b"\x02" + raw[1:], "offset 0"),
                         (raw[:33] + b"\x09" + raw[34:], "offset 33"),
                         (raw[:60], "offset 34"), (raw + b"x", "image key length")]:
        with pytest.raises(EnvelopeMalformed, match=problem):
            ReleasedSecrets.from_bytes(bad)
    assert released.nonce.hex() not in repr(released)
    assert "k" * 32 not in repr(released)


def test_release_aad_is_unambiguous():
    assert release_aad("ab", b"c") != release_aad("a", b"bc")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_envelopes_fail_only_with_sealing_errors(envelope):
    key = ec.derive_private_key(12345, ec.SECP256R1())
    with pytest.raises(SealingError):
        open_from_bind_key(envelope, aad=AAD, ecdh_zgen=zgen_for(key),
                           rsa_decrypt=lambda ct, label: b"\0" * 32)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_secrets_bytes_fail_only_with_envelope_malformed(data):
    try:
        released = ReleasedSecrets.from_bytes(data)
    except EnvelopeMalformed:
        return
    assert released.to_bytes() == data
