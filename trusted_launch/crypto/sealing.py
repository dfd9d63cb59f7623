"""Step 11-12: {N, H} released by the TTP to a host's TPM bind key.

Envelope (version 1)::

    version (1) || algorithm (1) || key material || GCM nonce (12) || ciphertext

* algorithm 1, ECC P-256: key material = ephemeral point x (32) || y (32);
  the AES-256-GCM key is HKDF-SHA256(Z.x, info=label || aad). The host gets
  Z.x from TPM2_ECDH_ZGen.
* algorithm 2, RSA-2048: key material = a random AES-256 key wrapped with
  RSA-OAEP-SHA256 (label ``trusted-launch/v1 release\\0``); the host unwraps
  it with TPM2_RSA_Decrypt.

The GCM associated data is the envelope header (everything before the GCM
nonce) followed by ``aad``, so no byte of the envelope can change unnoticed.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from trusted_launch.crypto._encoding import length_prefixed
from trusted_launch.crypto.digest import DIGEST_SIZES, ImageDigest
from trusted_launch.crypto.errors import (
    EnvelopeDecryptionFailed,
    EnvelopeMalformed,
    SealingError,
    UnsupportedBindKey,
)

ENVELOPE_VERSION = 1
ALG_ECC_P256 = 1
ALG_RSA_2048 = 2
RELEASE_LABEL = b"trusted-launch/v1 release"
OAEP_LABEL = RELEASE_LABEL + b"\0"
AAD_LABEL = b"trusted-launch/v1 release-aad"
_GCM_NONCE = 12
_TAG = 16
_COORD = 32
_RSA_BYTES = 256
_SECRETS_VERSION = 1
_ALG_IDS = {"sha256": 0x0B, "sha512": 0x0D}
_ALG_NAMES = {v: k for k, v in _ALG_IDS.items()}

ZGen = Callable[[bytes, bytes], bytes]
RSADecrypt = Callable[[bytes, bytes], bytes]


@dataclass(frozen=True)
class ReleasedSecrets:
    """What the TTP releases to an attested host. ``repr`` hides the secrets."""

    nonce: bytes
    image_digest: ImageDigest
    image_key: bytes | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.nonce, bytes) or len(self.nonce) != 32:
            raise ValueError("the released nonce must be 32 bytes")
        if self.image_key is not None and not 1 <= len(self.image_key) <= 255:
            raise ValueError("a released image key must be 1-255 bytes")

    def __repr__(self) -> str:
        key = "None" if self.image_key is None else "<hidden>"
        return (f"ReleasedSecrets(nonce=<hidden>, image_digest='{self.image_digest}', "
                f"image_key={key})")

    def to_bytes(self) -> bytes:
        """version || nonce (32) || alg id || digest || key length (1) || key."""
        key = self.image_key or b""
        return b"".join([
            bytes([_SECRETS_VERSION]), self.nonce, bytes([_ALG_IDS[self.image_digest.algorithm]]),
            self.image_digest.value, bytes([len(key)]), key,
        ])

    @classmethod
    def from_bytes(cls, data: bytes) -> ReleasedSecrets:
        """Decode :meth:`to_bytes` output; EnvelopeMalformed names the offset."""
        if len(data) < 35 or data[0] != _SECRETS_VERSION:
            raise EnvelopeMalformed(
                "released secrets at offset 0: unsupported version or too short")
        algorithm = _ALG_NAMES.get(data[33])
        if algorithm is None:
            raise EnvelopeMalformed(
                f"released secrets at offset 33: unknown digest algorithm id 0x{data[33]:02x}")
        end = 34 + DIGEST_SIZES[algorithm]
        if len(data) < end + 1:
            raise EnvelopeMalformed(f"released secrets at offset 34: {algorithm} digest truncated")
        key_size = data[end]
        if len(data) != end + 1 + key_size:
            raise EnvelopeMalformed(
                f"released secrets at offset {end}: image key length {key_size} does not match "
                f"the {len(data) - end - 1} bytes left")
        key = data[end + 1:] or None
        return cls(data[1:33], ImageDigest(algorithm, data[34:end]), key)


def release_aad(launch_id: str, bind_key_name: bytes) -> bytes:
    """The associated data both sides bind the envelope to."""
    return AAD_LABEL + length_prefixed(launch_id.encode("utf-8"), bytes(bind_key_name))


def seal_to_bind_key(public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
                     secrets: ReleasedSecrets, *, aad: bytes) -> bytes:
    """Encrypt ``secrets`` to a P-256 or RSA-2048 bind key."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        if not isinstance(public_key.curve, ec.SECP256R1):
            raise UnsupportedBindKey(f"ECC bind key on {public_key.curve.name}; only P-256")
        header, key = _ecc_key_material(public_key, aad)
    elif isinstance(public_key, rsa.RSAPublicKey):
        if public_key.key_size != 2048:
            raise UnsupportedBindKey(f"RSA-{public_key.key_size} bind key; only RSA-2048")
        header, key = _rsa_key_material(public_key)
    else:
        raise UnsupportedBindKey(f"bind key type {type(public_key).__name__} is not supported")
    gcm_nonce = os.urandom(_GCM_NONCE)
    ciphertext = AESGCM(key).encrypt(gcm_nonce, secrets.to_bytes(), header + aad)
    return header + gcm_nonce + ciphertext


def open_from_bind_key(envelope: bytes, *, aad: bytes, ecdh_zgen: ZGen | None = None,
                       rsa_decrypt: RSADecrypt | None = None) -> ReleasedSecrets:
    """Open an envelope with the TPM operation for its algorithm."""
    if len(envelope) < 2 or envelope[0] != ENVELOPE_VERSION:
        raise EnvelopeMalformed("release envelope at offset 0: unsupported version or empty")
    algorithm = envelope[1]
    if algorithm == ALG_ECC_P256:
        header_size = 2 + 2 * _COORD
        _check_length(envelope, header_size)
        key = _ecc_open_key(envelope[2:header_size], aad, ecdh_zgen)
    elif algorithm == ALG_RSA_2048:
        header_size = 2 + _RSA_BYTES
        _check_length(envelope, header_size)
        key = _rsa_open_key(envelope[2:header_size], rsa_decrypt)
    else:
        raise EnvelopeMalformed(f"release envelope at offset 1: unknown algorithm {algorithm}")
    header = envelope[:header_size]
    gcm_nonce = envelope[header_size:header_size + _GCM_NONCE]
    try:
        plaintext = AESGCM(key).decrypt(gcm_nonce, envelope[header_size + _GCM_NONCE:],
                                        header + aad)
    except InvalidTag:
        raise EnvelopeDecryptionFailed(
            "release envelope does not authenticate (wrong bind key, wrong launch/AAD, "
            "or altered envelope)") from None
    return ReleasedSecrets.from_bytes(plaintext)


def _check_length(envelope: bytes, header_size: int) -> None:
    minimum = header_size + _GCM_NONCE + _TAG
    if len(envelope) < minimum:
        raise EnvelopeMalformed(
            f"release envelope at offset {len(envelope)}: truncated, need at least {minimum} bytes")


def _derive_ecc_key(shared_x: bytes, aad: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=RELEASE_LABEL + aad).derive(shared_x)


def _ecc_key_material(public_key: ec.EllipticCurvePublicKey, aad: bytes) -> tuple[bytes, bytes]:
    ephemeral = ec.generate_private_key(ec.SECP256R1())
    shared_x = ephemeral.exchange(ec.ECDH(), public_key)
    numbers = ephemeral.public_key().public_numbers()
    point = numbers.x.to_bytes(_COORD, "big") + numbers.y.to_bytes(_COORD, "big")
    return bytes([ENVELOPE_VERSION, ALG_ECC_P256]) + point, _derive_ecc_key(shared_x, aad)


def _rsa_key_material(public_key: rsa.RSAPublicKey) -> tuple[bytes, bytes]:
    key = AESGCM.generate_key(bit_length=256)
    wrapped = public_key.encrypt(key, _oaep())
    return bytes([ENVELOPE_VERSION, ALG_RSA_2048]) + wrapped, key


def _ecc_open_key(point: bytes, aad: bytes, ecdh_zgen: ZGen | None) -> bytes:
    if ecdh_zgen is None:
        raise UnsupportedBindKey("ECC release envelope but no ECDH_ZGen operation was given")
    x, y = point[:_COORD], point[_COORD:]
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + x + y)
    except ValueError:
        raise EnvelopeMalformed(
            "release envelope at offset 2: ephemeral point is not on P-256") from None
    shared_x = bytes(ecdh_zgen(x, y))
    if len(shared_x) > _COORD:
        raise SealingError(f"ECDH_ZGen returned {len(shared_x)} bytes, expected {_COORD}")
    return _derive_ecc_key(shared_x.rjust(_COORD, b"\0"), aad)


def _rsa_open_key(wrapped: bytes, rsa_decrypt: RSADecrypt | None) -> bytes:
    if rsa_decrypt is None:
        raise UnsupportedBindKey("RSA release envelope but no RSA decrypt operation was given")
    try:
        key = bytes(rsa_decrypt(wrapped, OAEP_LABEL))
    except ValueError:
        raise EnvelopeDecryptionFailed(
            "release envelope at offset 2: wrapped key does not decrypt") from None
    if len(key) != 32:
        raise EnvelopeDecryptionFailed(
            f"release envelope at offset 2: unwrapped key is {len(key)} bytes, expected 32")
    return key


def _oaep() -> padding.OAEP:
    return padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(),
                        label=OAEP_LABEL)


def oaep_padding() -> padding.OAEP:
    """The OAEP parameters of the RSA path (for software stand-ins of the TPM)."""
    return _oaep()


