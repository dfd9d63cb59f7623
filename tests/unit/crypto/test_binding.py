"""Certify qualifying data: binds token, bind key name and launch id."""

from __future__ import annotations

import hashlib
import struct

import pytest

from trusted_launch.crypto._encoding import b64url_encode
from trusted_launch.crypto.binding import certify_qualifying_data
from trusted_launch.crypto.errors import TokenMalformed
from trusted_launch.crypto.token import token_digest

TOKEN = b64url_encode(b"\x01" + bytes(range(100)))
NAME = b"\x00\x0b" + bytes(range(32))


def expected(token: str, name: bytes, launch_id: str) -> bytes:
    """The contract formula, written out independently."""
    parts = [token_digest(token), name, launch_id.encode()]
    message = b"trusted-launch/v1 certify" + b"".join(
        struct.pack(">H", len(p)) + p for p in parts)
    return hashlib.sha256(message).digest()


def test_matches_contract_formula():
    value = certify_qualifying_data(TOKEN, NAME, "launch-é")
    assert value == expected(TOKEN, NAME, "launch-é")
    assert len(value) == 32


@pytest.mark.parametrize("token,name,launch_id", [
    (b64url_encode(b"\x01" + bytes(range(1, 101))), NAME, "launch"),
    (TOKEN, NAME[:-1] + b"\xff", "launch"),
    (TOKEN, NAME, "launch2"),
])
def test_each_input_changes_the_value(token, name, launch_id):
    assert certify_qualifying_data(token, name, launch_id) != certify_qualifying_data(
        TOKEN, NAME, "launch")


def test_field_boundaries_are_unambiguous():
    assert certify_qualifying_data(TOKEN, NAME + b"a", "b") != certify_qualifying_data(
        TOKEN, NAME, "ab")


def test_malformed_token_is_refused():
    with pytest.raises(TokenMalformed):
        certify_qualifying_data("!!", NAME, "launch")
