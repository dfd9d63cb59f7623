"""Tenant-side receipt handling: the published receipt keys and checks on each receipt."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.unit.client.conftest import keys_document
from trusted_launch.client.errors import ReceiptUnavailable
from trusted_launch.client.receipts import _verified, fetch_receipt_keys
from trusted_launch.cmd import cli
from trusted_launch.crypto.receipt import (
    Receipt,
    nonce_binding,
    public_key_pem,
    receipt_key_id,
    sign_receipt,
)

KEY = ec.generate_private_key(ec.SECP256R1())
NONCE = os.urandom(32)
DIGEST = hashlib.sha256(b"token bytes").digest()


def entry(key=KEY, **overrides) -> dict:
    return {"id": receipt_key_id(key.public_key()), "algorithm": "ecdsa-p256-sha256",
            "public_key": public_key_pem(key.public_key()), **overrides}


def signed(**changes) -> dict:
    fields = dict(attestation_id="a", launch_id="l", host="h", verdict="trusted",
                  issued_at=1_800_000_000, token_digest=DIGEST.hex(),
                  nonce_binding=nonce_binding(NONCE, DIGEST).hex())
    fields.update(changes)
    return sign_receipt(Receipt(**fields), KEY)


def test_receipt_keys_are_read_from_v1_keys(fake_ttp):
    fake_ttp.document = {**keys_document(fake_ttp.private_key), "receipt_keys": [entry()]}
    keys = fetch_receipt_keys(fake_ttp.url, ca_file=fake_ttp.ca_file)
    assert list(keys) == [receipt_key_id(KEY.public_key())]


@pytest.mark.parametrize(("receipt_keys", "message"), [
    (None, "lists no receipt keys"),
    ([], "lists no receipt keys"),
    ([entry(algorithm="rsa")], "not ecdsa-p256-sha256"),
    ([entry(id="0000000000000000")], "does not match its public key"),
    ([entry(public_key="not pem")], "not a PEM public key"),
])
def test_bad_receipt_key_publications_are_refused(fake_ttp, receipt_keys, message):
    fake_ttp.document = {**keys_document(fake_ttp.private_key), "receipt_keys": receipt_keys}
    with pytest.raises(ReceiptUnavailable, match=message):
        fetch_receipt_keys(fake_ttp.url, ca_file=fake_ttp.ca_file)


def test_receipt_key_fetch_needs_verified_tls(fake_ttp, test_ca):
    fake_ttp.document = {**keys_document(fake_ttp.private_key), "receipt_keys": [entry()]}
    with pytest.raises(ReceiptUnavailable, match="TLS"):
        fetch_receipt_keys(fake_ttp.url, ca_file=str(test_ca / "other-ca.pem"))


def test_each_receipt_must_verify_and_be_about_this_launch():
    keys = {receipt_key_id(KEY.public_key()): KEY.public_key()}
    assert _verified(signed(), keys, DIGEST, NONCE).verdict == "trusted"
    with pytest.raises(ReceiptUnavailable, match="another launch token"):
        _verified(signed(), keys, hashlib.sha256(b"other").digest(), NONCE)
    with pytest.raises(ReceiptUnavailable, match="not bound to this launch nonce"):
        _verified(signed(), keys, DIGEST, os.urandom(32))
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(ReceiptUnavailable, match="not a trusted TTP receipt key"):
        _verified(sign_receipt(Receipt(attestation_id="a", launch_id="l", host="h",
                                       verdict="trusted", issued_at=1), other),
                  keys, DIGEST, NONCE)


def test_cli_receipt_verify_offline(tmp_path, capsys):
    (tmp_path / "receipt.json").write_text(json.dumps(signed()))
    (tmp_path / "key.pem").write_text(public_key_pem(KEY.public_key()))
    (tmp_path / "nonce").write_text(NONCE.hex() + "\n")
    argv = ["receipt", "verify", str(tmp_path / "receipt.json"), "--key-file",
            str(tmp_path / "key.pem"), "--nonce-file", str(tmp_path / "nonce")]
    assert cli.main(argv) == 0
    assert "receipt signature OK" in capsys.readouterr().out
    (tmp_path / "nonce").write_text(os.urandom(32).hex() + "\n")
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not bound to this launch nonce" in err


def test_minimum_token_length_is_that_of_the_smallest_token():
    from trusted_launch.crypto.digest import ImageDigest
    from trusted_launch.crypto.token import MIN_TOKEN_BYTES, LaunchToken, sealed_length
    smallest = LaunchToken(bytes(32), "a", ImageDigest("sha256", bytes(32)), 0)
    assert sealed_length(smallest) == (4 * MIN_TOKEN_BYTES + 2) // 3


def test_a_truncated_token_is_named_before_the_ttp_is_asked(fake_ttp, tmp_path, capsys):
    """A cut token gets its own error, not the 'no decision about this token' of an unused one."""
    from trusted_launch.client.launch_token import create_launch_token
    from trusted_launch.crypto.digest import ImageDigest
    token, nonce_file = create_launch_token(
        fake_ttp.url, "high", ImageDigest("sha512", bytes(64)), ca_file=fake_ttp.ca_file,
        nonce_dir=tmp_path)
    base = ["receipt", "show", "--ttp", fake_ttp.url, "--ca-file", fake_ttp.ca_file,
            "--nonce-file", str(nonce_file), "--token"]
    fake_ttp.status = 500  # any request to the TTP would fail differently
    errors = {}
    for name, text in [("cut", token[:-12]), ("short", token[:100]), ("odd", token[:-1]),
                       ("whole", token)]:
        assert cli.main([*base, text]) == 1
        errors[name] = capsys.readouterr().err
        assert errors[name].count("\n") == 1
    assert "is not the one nonce file" in errors["cut"] and "cut or altered" in errors["cut"]
    assert "shorter than any complete token" in errors["short"]
    assert "cut" in errors["odd"]
    assert "cut" not in errors["whole"] and "HTTP 500" in errors["whole"]
