"""The host's check that a release comes from the TTP: its signed receipt, bound to N."""

from __future__ import annotations

import hashlib
import secrets
import time

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from trusted_launch.compute.errors import ReleaseUnauthenticated
from trusted_launch.compute.release_receipt import check_release_receipt, load_receipt_keys
from trusted_launch.crypto.receipt import (
    Receipt,
    nonce_binding,
    public_key_pem,
    receipt_key_id,
    sign_receipt,
)
from trusted_launch.crypto.sealing import ReleasedSecrets
from trusted_launch.crypto.token import ImageDigest

LAUNCH, HOST = "8c1f6a4e-3a4f-4d2b-9a51-0f6f4b1f2c3d", "cmp1"
TTP_KEY = ec.generate_private_key(ec.SECP256R1())
KEYS = {receipt_key_id(TTP_KEY.public_key()): TTP_KEY.public_key()}


def _receipt(nonce: bytes, token_digest: bytes, *, verdict: str = "trusted",
             launch_id: str = LAUNCH, host: str = HOST,
             key: ec.EllipticCurvePrivateKey = TTP_KEY) -> dict:
    return sign_receipt(Receipt(
        attestation_id="a1", launch_id=launch_id, host=host, verdict=verdict,
        issued_at=int(time.time()), token_digest=token_digest.hex(),
        nonce_binding=nonce_binding(nonce, token_digest).hex(),
        check=None if verdict == "trusted" else "profile_policy",
        reason=None if verdict == "trusted" else "no"), key)


def _released(nonce: bytes) -> ReleasedSecrets:
    return ReleasedSecrets(nonce, ImageDigest("sha256", hashlib.sha256(b"image").digest()))


def _check(receipt: object, nonce: bytes, digest: bytes) -> None:
    check_release_receipt(receipt, KEYS, launch_id=LAUNCH, host=HOST, token_digest=digest,
                          released=_released(nonce))


def test_the_ttps_receipt_for_this_launch_and_n_passes() -> None:
    nonce, digest = secrets.token_bytes(32), secrets.token_bytes(32)
    _check(_receipt(nonce, digest), nonce, digest)


@pytest.mark.parametrize(("make", "reason"), [
    (lambda n, d: None, "no signed receipt"),
    (lambda n, d: _receipt(secrets.token_bytes(32), d), "not bound to this launch nonce"),
    (lambda n, d: _receipt(n, secrets.token_bytes(32)), "another launch token"),
    (lambda n, d: _receipt(n, d, key=ec.generate_private_key(ec.SECP256R1())),
     "not a trusted TTP receipt key"),
    (lambda n, d: dict(_receipt(n, d), signature=_receipt(n, d)["signature"][::-1]),
     "receipt"),
    (lambda n, d: _receipt(n, d, verdict="refused"), "not a trusted decision"),
    (lambda n, d: _receipt(n, d, launch_id="another-launch"), "not a trusted decision"),
    (lambda n, d: _receipt(n, d, host="cmp2"), "not a trusted decision"),
], ids=["absent", "other-n", "other-token", "other-key", "bad-signature", "refused",
        "other-launch", "other-host"])
def test_anything_else_is_refused_by_name(make, reason) -> None:
    nonce, digest = secrets.token_bytes(32), secrets.token_bytes(32)
    with pytest.raises(ReleaseUnauthenticated) as refused:
        _check(make(nonce, digest), nonce, digest)
    assert refused.value.check == "release_unauthenticated"
    assert reason in refused.value.reason
    assert nonce.hex() not in str(refused.value)


def test_key_file_loaded_by_id(tmp_path) -> None:
    path = tmp_path / "receipt-key.pem"
    path.write_text(public_key_pem(TTP_KEY.public_key()))
    assert load_receipt_keys(str(path), required=True).keys() == KEYS.keys()


def test_key_file_required_over_rpc_optional_otherwise(tmp_path) -> None:
    assert load_receipt_keys(None, required=False) is None
    with pytest.raises(ValueError, match="ttp_transport = rpc needs ttp_receipt_key_file"):
        load_receipt_keys(None, required=True)


@pytest.mark.parametrize("content", [None, "not a key", "rsa"], ids=["missing", "garbage",
                                                                      "not-p256"])
def test_unusable_key_file_names_the_option(tmp_path, content) -> None:
    path = tmp_path / "receipt-key.pem"
    if content == "rsa":
        from cryptography.hazmat.primitives.asymmetric import rsa
        content = public_key_pem(rsa.generate_private_key(65537, 2048).public_key())
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match="ttp_receipt_key_file"):
        load_receipt_keys(str(path), required=False)
