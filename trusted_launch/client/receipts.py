"""R5: the tenant fetches and verifies the TTP's signed receipts of its launch.

The tenant proves knowledge of N with ``X-Receipt-Proof`` (HKDF of N, never N
itself), then checks every receipt: signed by a receipt key the TTP publishes
over verified TLS, about this token (token digest), and bound to this N.
"""

from __future__ import annotations

import json
import os

import requests
from cryptography.hazmat.primitives.asymmetric import ec

from trusted_launch.client.errors import MalformedToken, ReceiptUnavailable, TTPKeyError
from trusted_launch.client.ttp_keys import _get_keys_document, _short
from trusted_launch.crypto._encoding import b64url_encode
from trusted_launch.crypto.errors import TokenMalformed
from trusted_launch.crypto.receipt import (
    RECEIPT_KEY_ALGORITHM,
    Receipt,
    ReceiptError,
    check_binding,
    load_receipt_public_key,
    receipt_key_id,
    receipt_proof,
    verify_receipt,
)
from trusted_launch.crypto.token import check_token_text, token_digest

MAX_RESPONSE_BYTES = 1024 * 1024
PROOF_HEADER = "X-Receipt-Proof"


def fetch_receipt_keys(ttp_url: str, *, ca_file: str | None = None,
                       timeout: float = 10) -> dict[str, ec.EllipticCurvePublicKey]:
    """``{key id: public key}`` of the receipt keys in ``{ttp_url}/v1/keys``."""
    try:
        document = _get_keys_document(ttp_url, ca_file, timeout)
    except TTPKeyError as exc:
        raise ReceiptUnavailable(str(exc)) from None
    entries = document.get("receipt_keys") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ReceiptUnavailable(f"{ttp_url}/v1/keys lists no receipt keys")
    return dict(_parse_key(entry) for entry in entries)


def _parse_key(entry: object) -> tuple[str, ec.EllipticCurvePublicKey]:
    if not isinstance(entry, dict) or entry.get("algorithm") != RECEIPT_KEY_ALGORITHM:
        raise ReceiptUnavailable(f"a receipt key entry is not {RECEIPT_KEY_ALGORITHM}")
    try:
        key = load_receipt_public_key(entry.get("public_key") or "")
    except ReceiptError as exc:
        raise ReceiptUnavailable(str(exc)) from None
    if entry.get("id") != receipt_key_id(key):
        raise ReceiptUnavailable(f"receipt key id {str(entry.get('id'))[:20]!r} does not "
                                 "match its public key")
    return receipt_key_id(key), key


def fetch_receipts(ttp_url: str, token: str, nonce: bytes, *, ca_file: str | None = None,
                   timeout: float = 10) -> list[Receipt]:
    """Every decision the TTP made about ``token``, each verified; oldest first."""
    try:
        check_token_text(token)
    except TokenMalformed as exc:
        raise MalformedToken(str(exc)) from None
    digest = token_digest(token)
    keys = fetch_receipt_keys(ttp_url, ca_file=ca_file, timeout=timeout)
    document = _get_receipts(ttp_url, digest.hex(), receipt_proof(nonce), ca_file, timeout)
    receipts = document.get("receipts") if isinstance(document, dict) else None
    if not isinstance(receipts, list) or not receipts:
        raise ReceiptUnavailable("the TTP answered no receipts")
    return [_verified(entry, keys, digest, nonce) for entry in receipts]


def fetch_receipt(ttp_url: str, token: str, nonce: bytes, *, ca_file: str | None = None,
                  timeout: float = 10) -> Receipt:
    """The decisive receipt: the trusted decision if there is one, else the latest."""
    receipts = fetch_receipts(ttp_url, token, nonce, ca_file=ca_file, timeout=timeout)
    trusted = [receipt for receipt in receipts if receipt.trusted]
    return trusted[0] if trusted else receipts[-1]


def _verified(entry: object, keys: dict, digest: bytes, nonce: bytes) -> Receipt:
    try:
        receipt = verify_receipt(entry, keys).receipt
        check_binding(receipt, nonce=nonce, token_digest=digest)
    except ReceiptError as exc:
        raise ReceiptUnavailable(f"receipt rejected: {exc}") from None
    return receipt


def _get_receipts(ttp_url: str, digest_hex: str, proof: bytes, ca_file: str | None,
                  timeout: float) -> object:
    if not ttp_url.lower().startswith("https://"):
        raise ReceiptUnavailable(f"TTP URL {ttp_url!r} must use https://")
    if ca_file and not os.path.isfile(ca_file):
        raise ReceiptUnavailable(f"CA file {ca_file} does not exist")
    url = f"{ttp_url.rstrip('/')}/v1/receipts/{digest_hex}"
    try:
        response = requests.get(url, verify=ca_file if ca_file else True, timeout=timeout,
                                headers={"Accept": "application/json",
                                         PROOF_HEADER: b64url_encode(proof)},
                                allow_redirects=False, stream=True)
        with response:
            content = response.raw.read(MAX_RESPONSE_BYTES + 1, decode_content=True)
    except requests.exceptions.RequestException as exc:
        raise ReceiptUnavailable(f"cannot fetch receipts from {url}: {_short(exc)}") from None
    if len(content) > MAX_RESPONSE_BYTES:
        raise ReceiptUnavailable(f"{url} answered more than {MAX_RESPONSE_BYTES} bytes")
    try:
        document = json.loads(content)
    except ValueError:
        raise ReceiptUnavailable(f"{url} answered HTTP {response.status_code}, "
                                 "not JSON") from None
    if response.status_code != 200:
        error = document.get("error") if isinstance(document, dict) else None
        reason = error.get("reason") if isinstance(error, dict) else None
        raise ReceiptUnavailable(f"TTP refused the receipt request (HTTP "
                                 f"{response.status_code}): {reason}")
    return document
