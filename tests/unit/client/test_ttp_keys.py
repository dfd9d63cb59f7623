"""fetch_ttp_key against a real HTTPS server with TLS verification on."""

from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives import serialization

from tests.unit.client.conftest import keys_document
from trusted_launch.client.errors import TTPKeyError
from trusted_launch.client.ttp_keys import fetch_ttp_key


def raw(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def test_fetches_first_key(fake_ttp):
    key_id, public_key = fetch_ttp_key(fake_ttp.url, ca_file=fake_ttp.ca_file)
    assert key_id == fake_ttp.key_id
    assert raw(public_key) == raw(fake_ttp.private_key.public_key())


def test_trailing_slash_in_url(fake_ttp):
    assert fetch_ttp_key(fake_ttp.url + "/", ca_file=fake_ttp.ca_file)[0] == fake_ttp.key_id


def test_wrong_ca_fails_tls_verification(fake_ttp, test_ca):
    with pytest.raises(TTPKeyError, match=r"TLS verification of .* failed"):
        fetch_ttp_key(fake_ttp.url, ca_file=str(test_ca / "other-ca.pem"))


def test_system_cas_do_not_trust_the_test_ca(fake_ttp):
    with pytest.raises(TTPKeyError, match="TLS verification"):
        fetch_ttp_key(fake_ttp.url)


def test_plain_http_is_refused(fake_ttp):
    with pytest.raises(TTPKeyError, match="must use https"):
        fetch_ttp_key(fake_ttp.url.replace("https", "http"), ca_file=fake_ttp.ca_file)


def test_unreachable(fake_ttp):
    with pytest.raises(TTPKeyError, match="cannot reach"):
        fetch_ttp_key("https://127.0.0.1:1", ca_file=fake_ttp.ca_file, timeout=2)


@pytest.mark.parametrize("document,problem", [
    ({"keys": []}, "lists no keys"),
    ({}, "lists no keys"),
    ([1, 2], "lists no keys"),
    (b"not json", "did not answer JSON"),
    (b"[" * 70000, "more than 65536 bytes"),
])
def test_bad_documents(fake_ttp, document, problem):
    fake_ttp.document = document
    with pytest.raises(TTPKeyError, match=problem):
        fetch_ttp_key(fake_ttp.url, ca_file=fake_ttp.ca_file)


@pytest.mark.parametrize("overrides,problem", [
    ({"algorithm": "rsa-oaep"}, "uses algorithm 'rsa-oaep'"),
    ({"public_key": "AAAA"}, "public_key is 3 bytes"),
    ({"public_key": "**"}, "not base64url"),
    ({"id": None}, "no 'id'"),
    ({"id": "ttp-key-2026"}, "not 16 lower-case hex"),
    ({"not_after": 1000}, "past its not_after"),
])
def test_bad_key_entries(fake_ttp, overrides, problem):
    fake_ttp.document = keys_document(fake_ttp.private_key, **overrides)
    with pytest.raises(TTPKeyError, match=problem):
        fetch_ttp_key(fake_ttp.url, ca_file=fake_ttp.ca_file)


def test_future_not_after_is_accepted(fake_ttp):
    fake_ttp.document = keys_document(fake_ttp.private_key, not_after=int(time.time()) + 60)
    assert fetch_ttp_key(fake_ttp.url, ca_file=fake_ttp.ca_file)[0] == fake_ttp.key_id


def test_http_error_status(fake_ttp):
    fake_ttp.status = 503
    with pytest.raises(TTPKeyError, match="HTTP 503"):
        fetch_ttp_key(fake_ttp.url, ca_file=fake_ttp.ca_file)
