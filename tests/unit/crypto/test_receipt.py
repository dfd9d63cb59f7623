"""Launch receipts: signing, verification, fail-closed parsing and the values derived from N."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from trusted_launch.crypto.receipt import (
    Receipt,
    ReceiptBindingMismatch,
    ReceiptError,
    ReceiptKeyUnknown,
    ReceiptMalformed,
    ReceiptSignatureInvalid,
    check_binding,
    load_receipt_public_key,
    nonce_binding,
    public_key_pem,
    read_unverified,
    receipt_auth,
    receipt_key_id,
    receipt_proof,
    sign_receipt,
    verify_receipt,
)

NONCE = bytes(range(32))
TOKEN_DIGEST = hashlib.sha256(b"a sealed token").digest()
KEY = ec.generate_private_key(ec.SECP256R1())
KEYS = {receipt_key_id(KEY.public_key()): KEY.public_key()}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_receipt(**changes) -> Receipt:
    fields = dict(attestation_id="0b7e0a3c-58a4-4b6e-9d3d-2f4d2f0c9a11", launch_id="launch-1",
                  host="compute-1", verdict="trusted", issued_at=1_790_000_000,
                  requested_profile="high", satisfied_profile="high",
                  image_digest="sha256:" + "ab" * 32, token_digest=TOKEN_DIGEST.hex(),
                  nonce_binding=nonce_binding(NONCE, TOKEN_DIGEST).hex(),
                  ttp_key_id="0123456789abcdef",
                  evidence={"event_log": "11" * 32, "certify_info": "22" * 32,
                            "bind_key_public": "33" * 32})
    fields.update(changes)
    return Receipt(**fields)


def resign_payload(envelope: dict, payload: dict, key=KEY) -> dict:
    """An envelope over ``payload`` signed by ``key`` (bypassing Receipt validation)."""
    from trusted_launch.crypto import receipt as module
    data = json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()
    der = key.sign(module._signed_bytes(envelope["key_id"], data), ec.ECDSA(hashes.SHA256()))
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
    r, s = decode_dss_signature(der)
    return {**envelope, "payload": b64url(data),
            "signature": b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))}


def test_round_trip_keeps_every_field():
    receipt = make_receipt()
    envelope = sign_receipt(receipt, KEY)
    verified = verify_receipt(json.dumps(envelope), KEYS)
    assert verified.receipt == receipt
    assert verified.key_id == receipt_key_id(KEY.public_key())
    assert envelope["format"] == "trusted-launch-receipt/v1" and envelope["algorithm"] == "ES256"


def test_receipt_holds_no_nonce_or_proof():
    text = json.dumps(sign_receipt(make_receipt(), KEY)) + unb64url(
        sign_receipt(make_receipt(), KEY)["payload"]).decode()
    for secret in (NONCE, receipt_proof(NONCE)):
        assert secret.hex() not in text and b64url(secret) not in text


def test_refused_receipt_round_trips_with_check_and_reason():
    receipt = make_receipt(verdict="refused", satisfied_profile=None, check="profile_policy",
                           reason="Secure Boot is off")
    assert verify_receipt(sign_receipt(receipt, KEY), KEYS).receipt.check == "profile_policy"
    assert not receipt.trusted


def test_altered_payload_fails_the_signature():
    envelope = sign_receipt(make_receipt(verdict="refused", check="profile_policy",
                                         satisfied_profile=None), KEY)
    payload = json.loads(unb64url(envelope["payload"]))
    payload.update(verdict="trusted", check=None)
    forged = {**envelope, "payload": b64url(json.dumps(payload).encode())}
    with pytest.raises(ReceiptSignatureInvalid, match="does not verify"):
        verify_receipt(forged, KEYS)


def test_receipt_signed_by_another_key_under_our_key_id_fails():
    envelope = sign_receipt(make_receipt(), KEY)
    forged = resign_payload(envelope, json.loads(unb64url(envelope["payload"])),
                            key=ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(ReceiptSignatureInvalid):
        verify_receipt(forged, KEYS)


def test_unknown_key_id_is_refused():
    other = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(ReceiptKeyUnknown, match=receipt_key_id(other.public_key())):
        verify_receipt(sign_receipt(make_receipt(), other), KEYS)


def test_signature_is_domain_separated_from_plain_ecdsa_over_the_payload():
    envelope = sign_receipt(make_receipt(), KEY)
    payload = unb64url(envelope["payload"])
    der = KEY.sign(payload, ec.ECDSA(hashes.SHA256()))
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
    r, s = decode_dss_signature(der)
    plain = {**envelope, "signature": b64url(r.to_bytes(32, "big") + s.to_bytes(32, "big"))}
    with pytest.raises(ReceiptSignatureInvalid):
        verify_receipt(plain, KEYS)


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda e: "not json", "not JSON"),
    (lambda e: [e], "JSON object"),
    (lambda e: {**e, "format": "jws"}, "format"),
    (lambda e: {**e, "algorithm": "none"}, "algorithm"),
    (lambda e: {**e, "key_id": "XYZ"}, "key_id"),
    (lambda e: {**e, "payload": "***"}, "'payload' is not base64url"),
    (lambda e: {**e, "payload": 5}, "'payload' must be"),
    (lambda e: {**e, "signature": b64url(b"\x01" * 63)}, "63 bytes"),
])
def test_malformed_envelopes_are_named(mutate, message):
    envelope = sign_receipt(make_receipt(), KEY)
    with pytest.raises(ReceiptMalformed, match=message):
        verify_receipt(mutate(envelope), KEYS)


@pytest.mark.parametrize(("change", "message"), [
    ({"verdict": "maybe"}, "verdict"),
    ({"issued_at": "yesterday"}, "issued_at"),
    ({"image_digest": "md5:00"}, "image_digest"),
    ({"token_digest": "AB" * 32}, "token_digest"),
    ({"evidence": {"token": "00" * 32}}, "not a known evidence name"),
    ({"evidence": {"event_log": "xyz"}}, "evidence 'event_log'"),
    ({"host": ""}, "'host'"),
    ({"version": 2}, "version"),
    ({"ttp_key_id": "short"}, "ttp_key_id"),
    ({"nonce": NONCE.hex()}, "unknown field 'nonce'"),
])
def test_malformed_payload_fields_are_named(change, message):
    envelope = sign_receipt(make_receipt(), KEY)
    payload = {**json.loads(unb64url(envelope["payload"])), **change}
    with pytest.raises(ReceiptMalformed, match=message):
        verify_receipt(resign_payload(envelope, payload), KEYS)


def test_missing_payload_field_is_named():
    envelope = sign_receipt(make_receipt(), KEY)
    payload = json.loads(unb64url(envelope["payload"]))
    del payload["launch_id"]
    with pytest.raises(ReceiptMalformed, match="lacks field 'launch_id'"):
        verify_receipt(resign_payload(envelope, payload), KEYS)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=300))
def test_arbitrary_input_only_raises_receipt_errors(data):
    with pytest.raises(ReceiptError):
        verify_receipt(data, KEYS)


@settings(max_examples=150, deadline=None)
@given(st.integers(min_value=0), st.integers(min_value=0, max_value=255))
def test_any_single_byte_change_of_a_signed_receipt_is_refused(position, value):
    envelope = sign_receipt(make_receipt(), KEY)
    payload = bytearray(unb64url(envelope["payload"]))
    position %= len(payload)
    if payload[position] == value:
        return
    payload[position] = value
    with pytest.raises(ReceiptError):
        verify_receipt({**envelope, "payload": b64url(bytes(payload))}, KEYS)


def test_proof_and_auth_follow_the_spec():
    proof = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                 info=b"trusted-launch/v1 receipt").derive(NONCE)
    assert receipt_proof(NONCE) == proof
    assert receipt_auth(proof) == hashlib.sha256(proof).digest()
    assert receipt_auth(proof) not in (NONCE, proof)
    binding_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                       info=b"trusted-launch/v1 receipt-binding").derive(NONCE)
    assert nonce_binding(NONCE, TOKEN_DIGEST) == hmac.new(binding_key, TOKEN_DIGEST,
                                                          hashlib.sha256).digest()
    with pytest.raises(ReceiptError, match="32 bytes"):
        receipt_proof(b"short")


def test_binding_checks_nonce_and_token():
    receipt = make_receipt()
    check_binding(receipt, nonce=NONCE, token_digest=TOKEN_DIGEST)
    with pytest.raises(ReceiptBindingMismatch, match="nonce"):
        check_binding(receipt, nonce=os.urandom(32))
    with pytest.raises(ReceiptBindingMismatch, match="another launch token"):
        check_binding(receipt, token_digest=hashlib.sha256(b"other").digest())
    with pytest.raises(ReceiptBindingMismatch, match="no binding"):
        check_binding(make_receipt(nonce_binding=None), nonce=NONCE)


def test_read_unverified_does_not_check_the_signature():
    envelope = sign_receipt(make_receipt(), KEY)
    broken = {**envelope, "signature": b64url(bytes(64))}
    key_id, receipt = read_unverified(broken)
    assert receipt == make_receipt() and key_id == envelope["key_id"]
    with pytest.raises(ReceiptSignatureInvalid):
        verify_receipt(broken, KEYS)


def test_public_key_pem_round_trip_and_wrong_curve():
    assert receipt_key_id(load_receipt_public_key(public_key_pem(KEY.public_key()))) == \
        receipt_key_id(KEY.public_key())
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    with pytest.raises(ReceiptMalformed, match="P-256"):
        load_receipt_public_key(public_key_pem(p384))
    with pytest.raises(ReceiptMalformed, match="not a PEM"):
        load_receipt_public_key("garbage")
