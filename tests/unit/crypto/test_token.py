"""Launch token: HPKE seal/open, compact size, and fail-closed decoding."""

from __future__ import annotations

import base64
import hashlib
import os

import pytest
from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from trusted_launch.crypto import token as token_mod
from trusted_launch.crypto.digest import ImageDigest
from trusted_launch.crypto.errors import (
    InvalidImageDigest,
    TokenDecryptionFailed,
    TokenError,
    TokenExpired,
    TokenMalformed,
    UnknownTokenKey,
)
from trusted_launch.crypto.token import (
    LaunchToken,
    key_id_for,
    open_token,
    seal_token,
    token_digest,
)

NOW = 1_800_000_000


@pytest.fixture(scope="module")
def ttp_key() -> X25519PrivateKey:
    return X25519PrivateKey.generate()


@pytest.fixture(scope="module")
def keys(ttp_key) -> dict:
    return {key_id_for(ttp_key.public_key()): ttp_key}


def make_token(**overrides) -> LaunchToken:
    fields = {"nonce": os.urandom(32), "profile": "high",
              "image_digest": ImageDigest("sha512", os.urandom(64)), "expires_at": NOW + 3600}
    fields.update(overrides)
    return LaunchToken(**fields)


def seal(token: LaunchToken, ttp_key: X25519PrivateKey) -> str:
    return seal_token(token, ttp_key.public_key(), key_id_for(ttp_key.public_key()))


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def raw_of(text: str) -> bytearray:
    return bytearray(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))


@pytest.mark.parametrize("algorithm,size", [("sha256", 32), ("sha512", 64)])
def test_round_trip(ttp_key, keys, algorithm, size):
    token = make_token(image_digest=ImageDigest(algorithm, os.urandom(size)))
    assert open_token(seal(token, ttp_key), keys, now=NOW) == token


def test_round_trip_with_image_key(ttp_key, keys):
    token = make_token(image_key=os.urandom(32))
    assert open_token(seal(token, ttp_key), keys, now=NOW).image_key == token.image_key


def test_sha512_with_16_char_profile_fits_nova_metadata(ttp_key):
    text = seal(make_token(profile="p" * 16), ttp_key)
    print(f"token length (sha512, 16-char profile): {len(text)} chars")
    assert len(text) <= 255
    assert "=" not in text and "+" not in text and "/" not in text


def test_two_seals_of_one_token_differ(ttp_key):
    token = make_token()
    assert seal(token, ttp_key) != seal(token, ttp_key)


def test_unknown_key_id(ttp_key):
    other = X25519PrivateKey.generate()
    with pytest.raises(UnknownTokenKey, match=key_id_for(ttp_key.public_key())):
        open_token(seal(make_token(), ttp_key), {key_id_for(other.public_key()): other}, now=NOW)


def test_wrong_private_key_under_the_right_id(ttp_key):
    other = X25519PrivateKey.generate()
    with pytest.raises(TokenDecryptionFailed):
        open_token(seal(make_token(), ttp_key),
                   {key_id_for(ttp_key.public_key()): other}, now=NOW)


def test_expired(ttp_key, keys):
    text = seal(make_token(expires_at=NOW), ttp_key)
    with pytest.raises(TokenExpired, match=str(NOW)):
        open_token(text, keys, now=NOW)
    assert open_token(text, keys, now=NOW - 1).expires_at == NOW


def test_every_flipped_byte_is_refused(ttp_key, keys):
    raw = raw_of(seal(make_token(), ttp_key))
    for index in range(len(raw)):
        tampered = bytearray(raw)
        tampered[index] ^= 0x01
        with pytest.raises(TokenError):
            open_token(b64url(bytes(tampered)), keys, now=NOW)


def test_key_id_relabel_is_refused(ttp_key):
    """A token moved under another key id the TTP also holds does not open (info binding)."""
    key_id = key_id_for(ttp_key.public_key())
    raw = raw_of(seal(make_token(), ttp_key))
    raw[1:9] = bytes.fromhex("00" * 8)
    with pytest.raises(TokenDecryptionFailed):
        open_token(b64url(bytes(raw)), {key_id: ttp_key, "0" * 16: ttp_key}, now=NOW)


@pytest.mark.parametrize("text,problem", [
    ("", "shorter than the minimum"),
    ("not base64!", "not base64url"),
    ("A" * 5000, "more than"),
    (b64url(b"\x02" + bytes(80)), "version 2"),
    (b64url(bytes(20)), "shorter than the minimum"),
])
def test_malformed_outer(keys, text, problem):
    with pytest.raises(TokenMalformed, match=problem):
        open_token(text, keys, now=NOW)


def seal_plaintext(ttp_key: X25519PrivateKey, plaintext: bytes) -> str:
    """Seal arbitrary plaintext the way seal_token does, to test the inner decoder."""
    key_id = key_id_for(ttp_key.public_key())
    header = b"\x01" + bytes.fromhex(key_id)
    suite = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_128_GCM)
    sealed = suite.encrypt(plaintext, ttp_key.public_key(),
                           info=b"trusted-launch/v1 token" + header)
    return b64url(header + sealed)


NONCE = bytes(range(32))
GOOD_TAIL = b"\x0b" + bytes(32) + (NOW + 10).to_bytes(4, "big") + b"\x04high" + b"\x00"


@pytest.mark.parametrize("plaintext,problem", [
    (b"", "offset 0: version needs 1 bytes"),
    (b"\x07" + NONCE + GOOD_TAIL, "plaintext version 7"),
    (b"\x01" + NONCE[:10], "offset 1: nonce needs 32 bytes"),
    (b"\x01" + NONCE + b"\x05" + bytes(32), "offset 33: unknown image digest algorithm id 0x05"),
    (b"\x01" + NONCE + b"\x0d" + bytes(10), "sha512 digest needs 64 bytes"),
    (b"\x01" + NONCE + GOOD_TAIL[:-6] + b"\x04HIGH\x00", "offset 70: profile name is not"),
    (b"\x01" + NONCE + GOOD_TAIL[:-6] + b"\x00\x00", "profile name is not"),
    (b"\x01" + NONCE + GOOD_TAIL[:-1] + b"\x20" + bytes(3), "image key needs 32 bytes"),
    (b"\x01" + NONCE + GOOD_TAIL + b"junk", "4 unexpected trailing bytes"),
    (b"\x01" + NONCE + GOOD_TAIL[:-1] + b"\x50" + bytes(80), "image key must be 1-64 bytes"),
], ids=["empty", "version", "short-nonce", "digest-alg", "short-digest", "upper-profile",
        "empty-profile", "short-image-key", "trailing", "long-image-key"])
def test_malformed_plaintext(ttp_key, keys, plaintext, problem):
    with pytest.raises(TokenMalformed, match=problem) as excinfo:
        open_token(seal_plaintext(ttp_key, plaintext), keys, now=NOW)
    assert NONCE.hex() not in str(excinfo.value)


def test_well_formed_hand_built_plaintext(ttp_key, keys):
    token = open_token(seal_plaintext(ttp_key, b"\x01" + NONCE + GOOD_TAIL), keys, now=NOW)
    assert (token.nonce, token.profile, token.image_digest.algorithm) == (NONCE, "high", "sha256")
    assert token.image_key is None


def test_errors_and_repr_never_show_the_nonce(ttp_key, keys):
    token = make_token(expires_at=NOW - 5)
    with pytest.raises(TokenExpired) as excinfo:
        open_token(seal(token, ttp_key), keys, now=NOW)
    for secret in (token.nonce.hex(), repr(token.nonce)):
        assert secret not in str(excinfo.value)
        assert secret not in repr(token)


@pytest.mark.parametrize("profile", ["", "High", "a" * 33, "hi gh", "héh"])
def test_invalid_profile_names(profile):
    with pytest.raises(ValueError, match="security profile name"):
        make_token(profile=profile)


@pytest.mark.parametrize("key_id", ["", "ABCDEF0123456789", "abc", "g" * 16, "0" * 17])
def test_seal_requires_hex_key_id(ttp_key, key_id):
    with pytest.raises(ValueError, match="key id"):
        seal_token(make_token(), ttp_key.public_key(), key_id)


def test_token_fields_are_validated():
    with pytest.raises(ValueError, match="32 bytes"):
        make_token(nonce=bytes(31))
    with pytest.raises(ValueError, match="expires_at"):
        make_token(expires_at=2**32)
    with pytest.raises(ValueError, match="image key"):
        make_token(image_key=b"")


def test_image_digest_parse_and_str():
    digest = ImageDigest.parse("SHA256:" + "ab" * 32)
    assert digest == ImageDigest("sha256", bytes([0xAB]) * 32)
    assert str(digest) == "sha256:" + "ab" * 32
    for bad in ("sha256", "md5:" + "00" * 16, "sha256:zz", "sha512:" + "00" * 32):
        with pytest.raises(InvalidImageDigest):
            ImageDigest.parse(bad)


def test_token_digest_is_sha256_of_decoded_bytes(ttp_key):
    text = seal(make_token(), ttp_key)
    assert token_digest(text) == hashlib.sha256(bytes(raw_of(text))).digest()
    with pytest.raises(TokenMalformed):
        token_digest("@@@")


def test_key_id_is_sha256_prefix(ttp_key):
    raw = ttp_key.public_key().public_bytes(serialization.Encoding.Raw,
                                            serialization.PublicFormat.Raw)
    assert key_id_for(ttp_key.public_key()) == hashlib.sha256(raw).hexdigest()[:16]


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400))
def test_arbitrary_text_fails_only_with_token_errors(text):
    key = X25519PrivateKey.from_private_bytes(bytes(32))
    try:
        open_token(text, {key_id_for(key.public_key()): key}, now=NOW)
    except TokenError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_plaintext_fails_only_with_token_malformed(plaintext):
    key = X25519PrivateKey.from_private_bytes(bytes(32))
    keys = {key_id_for(key.public_key()): key}
    try:
        token = open_token(seal_plaintext(key, plaintext), keys, now=0)
    except TokenError:
        return
    assert token_mod._encode_plaintext(token) == plaintext


# One Nova metadata value (255 characters) -----------------------------------------------
def test_sha512_token_with_16_byte_key_and_profile_high_fits_metadata(ttp_key, keys):
    token = token_mod.check_fits_metadata(make_token(image_key=os.urandom(16)))
    text = seal(token, ttp_key)
    assert len(text) == token_mod.sealed_length(token) <= token_mod.MAX_METADATA_CHARS
    assert open_token(text, keys, now=NOW).image_key == token.image_key


def test_sealed_length_predicts_every_size(ttp_key):
    for profile in ("a", "high", "x" * 32):
        for key in (None, os.urandom(1), os.urandom(16), os.urandom(64)):
            token = make_token(profile=profile, image_key=key)
            assert token_mod.sealed_length(token) == len(seal(token, ttp_key))


def test_token_too_long_for_metadata_names_length_and_cause():
    token = make_token(profile="a-very-long-profile-name", image_key=os.urandom(32))
    with pytest.raises(token_mod.TokenTooLong) as caught:
        token_mod.check_fits_metadata(token)
    message = str(caught.value)
    assert f"{token_mod.sealed_length(token)} characters" in message
    assert "255" in message and "profile name 24 characters" in message
    assert "image key 32 bytes" in message and "sha512" in message
    assert isinstance(caught.value, TokenError)
    assert token.image_key.hex() not in message
