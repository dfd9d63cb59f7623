"""The launch token: {N, security profile, image digest H} sealed to the TTP.

Wire form (base64url without padding)::

    version (1) || key id (8) || HPKE enc (32) || HPKE ciphertext

HPKE is RFC 9180 base mode with X25519, HKDF-SHA256 and AES-128-GCM; its
``info`` binds the protocol version and the key id, so a token cannot be
re-labelled for another TTP key. The plaintext is compact binary::

    version (1) || nonce (32) || digest alg (1, TPM_ALG_ID) || digest
    || expires_at (u32 BE, unix s) || profile length (1) || profile (ASCII)
    || image key length (1, 0 = none) || image key

A key id is 16 lower-case hex characters; :func:`key_id_for` derives it from
the raw X25519 public key (first 8 bytes of its SHA-256).

A token travels as one Nova metadata value, at most 255 characters
(:data:`MAX_METADATA_CHARS`); :func:`check_fits_metadata` tells the tenant
before sealing if a profile name, digest and image key do not fit (a sha512
digest, a 16-byte image key and a profile name of up to 14 characters do).
"""

from __future__ import annotations

import binascii
import hashlib
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from trusted_launch.crypto._encoding import b64url_decode, b64url_encode
from trusted_launch.crypto.digest import DIGEST_SIZES, ImageDigest
from trusted_launch.crypto.errors import (
    TokenDecryptionFailed,
    TokenError,
    TokenExpired,
    TokenMalformed,
    UnknownTokenKey,
)

__all__ = [
    "HPKE_ALGORITHM", "MAX_METADATA_CHARS", "MIN_TOKEN_BYTES", "ImageDigest", "LaunchToken",
    "TokenTooLong", "check_fits_metadata", "check_token_text", "key_id_for", "open_token",
    "seal_token", "sealed_length", "token_digest",
]

TOKEN_VERSION = 1
HPKE_ALGORITHM = "hpke-x25519-hkdf-sha256-aes128gcm"
NONCE_SIZE = 32
KEY_ID_SIZE = 8
MAX_EXPIRES_AT = 0xFFFFFFFF
MAX_IMAGE_KEY_SIZE = 64
MAX_TOKEN_CHARS = 4096
MAX_METADATA_CHARS = 255  # one Nova server metadata value
_ENC_SIZE = 32
_TAG_SIZE = 16
# version, nonce, sha256 id + digest, expiry, a 1-character profile, no image key
_MIN_PLAINTEXT = 1 + NONCE_SIZE + 1 + 32 + 4 + 1 + 1 + 1
#: No complete token is shorter (bytes, and base64url characters).
MIN_TOKEN_BYTES = 1 + KEY_ID_SIZE + _ENC_SIZE + _MIN_PLAINTEXT + _TAG_SIZE
MIN_TOKEN_CHARS = (4 * MIN_TOKEN_BYTES + 2) // 3
_INFO_LABEL = b"trusted-launch/v1 token"
_PROFILE_RE = re.compile(r"[a-z0-9_-]{1,32}")
_KEY_ID_RE = re.compile(r"[0-9a-f]{16}")
_ALG_IDS = {"sha256": 0x0B, "sha512": 0x0D}
_ALG_NAMES = {v: k for k, v in _ALG_IDS.items()}
_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_128_GCM)


@dataclass(frozen=True)
class LaunchToken:
    """What the tenant tells the TTP. ``repr`` hides the nonce and image key."""

    nonce: bytes
    profile: str
    image_digest: ImageDigest
    expires_at: int
    image_key: bytes | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.nonce, bytes) or len(self.nonce) != NONCE_SIZE:
            raise ValueError(f"the nonce must be {NONCE_SIZE} bytes")
        validate_profile_name(self.profile)
        if not 0 <= self.expires_at <= MAX_EXPIRES_AT:
            raise ValueError(f"expires_at {self.expires_at} is outside 0..{MAX_EXPIRES_AT}")
        if self.image_key is not None and not 1 <= len(self.image_key) <= MAX_IMAGE_KEY_SIZE:
            raise ValueError(f"an image key must be 1-{MAX_IMAGE_KEY_SIZE} bytes")

    def __repr__(self) -> str:
        key = "None" if self.image_key is None else "<hidden>"
        return (f"LaunchToken(nonce=<hidden>, profile={self.profile!r}, "
                f"image_digest='{self.image_digest}', expires_at={self.expires_at}, "
                f"image_key={key})")


class TokenTooLong(TokenError):
    """A token that would not fit one Nova metadata value (255 characters)."""


def sealed_length(token: LaunchToken) -> int:
    """Characters of the base64url text :func:`seal_token` makes for ``token``."""
    raw = 1 + KEY_ID_SIZE + _ENC_SIZE + len(_encode_plaintext(token)) + _TAG_SIZE
    return (4 * raw + 2) // 3


def check_fits_metadata(token: LaunchToken) -> LaunchToken:
    """Return ``token`` if its sealed text fits one Nova metadata value, else TokenTooLong."""
    length = sealed_length(token)
    if length > MAX_METADATA_CHARS:
        key_size = len(token.image_key or b"")
        raise TokenTooLong(
            f"the sealed token would be {length} characters, more than the "
            f"{MAX_METADATA_CHARS} of one Nova metadata value: profile name "
            f"{len(token.profile)} characters, {token.image_digest.algorithm} image digest, "
            f"image key {key_size} bytes; use a shorter profile name or a 16-byte image key")
    return token


def validate_profile_name(profile: str) -> str:
    """Return ``profile`` if it is 1-32 characters of [a-z0-9_-], else ValueError."""
    if not isinstance(profile, str) or not _PROFILE_RE.fullmatch(profile):
        raise ValueError(
            f"security profile name {profile!r} must be 1-32 characters of [a-z0-9_-]")
    return profile


def key_id_for(public_key: X25519PublicKey) -> str:
    """The key id of a TTP public key: hex of the first 8 bytes of SHA-256(raw key)."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).digest()[:KEY_ID_SIZE].hex()


def seal_token(token: LaunchToken, public_key: X25519PublicKey, key_id: str) -> str:
    """Encrypt ``token`` to the TTP key ``key_id``; return base64url text."""
    header = bytes([TOKEN_VERSION]) + _key_id_bytes(key_id)
    sealed = _SUITE.encrypt(_encode_plaintext(token), public_key, info=_info(header))
    return b64url_encode(header + sealed)


def open_token(text: str, private_keys: Mapping[str, X25519PrivateKey], *,
               now: float) -> LaunchToken:
    """Decrypt and check a token; raise a :class:`TokenError` subclass if unusable."""
    raw = _decode_outer(text)
    header, sealed = raw[:1 + KEY_ID_SIZE], raw[1 + KEY_ID_SIZE:]
    key_id = header[1:].hex()
    private_key = private_keys.get(key_id)
    if private_key is None:
        raise UnknownTokenKey(f"token is sealed to TTP key {key_id}, which this TTP does not hold")
    try:
        plaintext = _SUITE.decrypt(sealed, private_key, info=_info(header))
    except (InvalidTag, ValueError):
        raise TokenDecryptionFailed(
            f"token does not decrypt with TTP key {key_id} (wrong key or altered token)") from None
    token = _decode_plaintext(plaintext)
    if token.expires_at <= now:
        raise TokenExpired(f"token expired at {token.expires_at} (now {int(now)})")
    return token


def check_token_text(text: str) -> bytes:
    """The decoded bytes of ``text`` if it can be a whole token; else TokenMalformed.

    Without the TTP's key a token's exact length is unknown, but none is
    shorter than :data:`MIN_TOKEN_BYTES`; the message says it was likely cut.
    """
    stripped = text.strip() if isinstance(text, str) else text
    try:
        raw = _decode_outer(stripped)
    except TokenMalformed as exc:
        raise TokenMalformed(f"{exc} (was the token cut or altered when copied?)") from None
    if len(raw) < MIN_TOKEN_BYTES:
        raise TokenMalformed(
            f"token is {len(stripped)} characters, shorter than any complete token "
            f"({MIN_TOKEN_CHARS}): it was cut when copied; use the whole token")
    return raw


def token_digest(text: str) -> bytes:
    """SHA-256 of the decoded token bytes (the TTP's replay key)."""
    return hashlib.sha256(_decode_outer(text)).digest()


def _key_id_bytes(key_id: str) -> bytes:
    if not isinstance(key_id, str) or not _KEY_ID_RE.fullmatch(key_id):
        raise ValueError(f"TTP key id {key_id!r} must be 16 lower-case hex characters")
    return binascii.unhexlify(key_id)


def _info(header: bytes) -> bytes:
    return _INFO_LABEL + header


def _encode_plaintext(token: LaunchToken) -> bytes:
    digest = token.image_digest
    image_key = token.image_key or b""
    profile = token.profile.encode("ascii")
    return b"".join([
        bytes([TOKEN_VERSION]), token.nonce, bytes([_ALG_IDS[digest.algorithm]]), digest.value,
        struct.pack(">I", token.expires_at), bytes([len(profile)]), profile,
        bytes([len(image_key)]), image_key,
    ])


def _decode_outer(text: str) -> bytes:
    if not isinstance(text, str):
        raise TokenMalformed("token must be a string")
    if len(text) > MAX_TOKEN_CHARS:
        raise TokenMalformed(f"token is {len(text)} characters, more than {MAX_TOKEN_CHARS}")
    try:
        raw = b64url_decode(text.strip())
    except ValueError as exc:
        raise TokenMalformed(f"token is not base64url: {exc}") from None
    minimum = 1 + KEY_ID_SIZE + _ENC_SIZE + _TAG_SIZE
    if len(raw) < minimum:
        raise TokenMalformed(f"token is {len(raw)} bytes, shorter than the minimum {minimum}")
    if raw[0] != TOKEN_VERSION:
        raise TokenMalformed(
            f"token at offset 0: version {raw[0]} is not supported (expected {TOKEN_VERSION})")
    return raw


class _PlainReader:
    """Bounds-checked reader over the decrypted plaintext; errors name the offset."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self.offset = 0

    def take(self, count: int, field: str) -> bytes:
        if count > len(self._data) - self.offset:
            raise TokenMalformed(
                f"token plaintext at offset {self.offset}: {field} needs {count} bytes, "
                f"{len(self._data) - self.offset} left")
        chunk = self._data[self.offset:self.offset + count]
        self.offset += count
        return chunk

    def fail(self, problem: str, offset: int | None = None) -> TokenMalformed:
        where = self.offset if offset is None else offset
        return TokenMalformed(f"token plaintext at offset {where}: {problem}")


def _decode_plaintext(plaintext: bytes) -> LaunchToken:
    reader = _PlainReader(plaintext)
    version = reader.take(1, "version")[0]
    if version != TOKEN_VERSION:
        raise reader.fail(f"plaintext version {version} is not supported", 0)
    nonce = reader.take(NONCE_SIZE, "nonce")
    digest = _read_digest(reader)
    (expires_at,) = struct.unpack(">I", reader.take(4, "expiry"))
    profile = _read_profile(reader)
    key_size = reader.take(1, "image key length")[0]
    image_key = reader.take(key_size, "image key") if key_size else None
    if reader.offset != len(plaintext):
        raise reader.fail(f"{len(plaintext) - reader.offset} unexpected trailing bytes")
    try:
        return LaunchToken(nonce, profile, digest, expires_at, image_key)
    except ValueError as exc:
        raise TokenMalformed(f"token plaintext: {exc}") from None


def _read_digest(reader: _PlainReader) -> ImageDigest:
    start = reader.offset
    alg_id = reader.take(1, "digest algorithm")[0]
    algorithm = _ALG_NAMES.get(alg_id)
    if algorithm is None:
        raise reader.fail(f"unknown image digest algorithm id 0x{alg_id:02x}", start)
    return ImageDigest(algorithm, reader.take(DIGEST_SIZES[algorithm], f"{algorithm} digest"))


def _read_profile(reader: _PlainReader) -> str:
    start = reader.offset
    size = reader.take(1, "profile length")[0]
    text = reader.take(size, "profile name").decode("ascii", errors="replace")
    if not _PROFILE_RE.fullmatch(text):
        raise reader.fail("profile name is not 1-32 characters of [a-z0-9_-]", start)
    return text
