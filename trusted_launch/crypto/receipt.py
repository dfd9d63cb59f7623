"""Launch receipts: the TTP's signed account of one attestation decision.

A receipt is a JSON object::

    {"format": "trusted-launch-receipt/v1", "key_id": "<16 hex>", "algorithm": "ES256",
     "payload": "<base64url canonical JSON>", "signature": "<base64url r || s>"}

The ECDSA P-256 / SHA-256 signature covers ``"trusted-launch/v1 receipt" 0x00
key_id 0x00 payload``, so it cannot be confused with any other signature the
TTP makes. The payload (:class:`Receipt`) names the decision, the host, the
profiles, the image digest, digests of the evidence and the token, and never
holds N or the token.

Two values derived from N tie a receipt to its tenant without revealing N:

* ``receipt_proof(N) = HKDF-SHA256(N, info="trusted-launch/v1 receipt")`` is
  what the tenant presents to fetch receipts; the TTP keeps only
  ``receipt_auth = SHA-256(proof)``, a one-way value;
* ``nonce_binding = HMAC-SHA256(HKDF(N, info="trusted-launch/v1 receipt-binding"),
  token digest)`` is signed inside the receipt, so whoever knows N (tenant,
  VM) can check that the receipt is about their launch.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from trusted_launch.crypto._encoding import b64url_decode, b64url_encode
from trusted_launch.crypto.digest import ImageDigest
from trusted_launch.crypto.errors import CryptoError

RECEIPT_FORMAT = "trusted-launch-receipt/v1"
RECEIPT_ALGORITHM = "ES256"
RECEIPT_KEY_ALGORITHM = "ecdsa-p256-sha256"
RECEIPT_VERSION = 1
PROOF_INFO = b"trusted-launch/v1 receipt"
BINDING_INFO = b"trusted-launch/v1 receipt-binding"
_SIGNING_LABEL = b"trusted-launch/v1 receipt\x00"
MAX_PAYLOAD = 8192
MAX_REASON = 1000
_KEY_ID_RE = re.compile(r"[0-9a-f]{16}")
_HEX_RE = re.compile(r"[0-9a-f]{2,256}")
_TEXT_FIELDS = ("attestation_id", "launch_id", "host")
_OPTIONAL_TEXT = ("requested_profile", "satisfied_profile", "check", "reason")
EVIDENCE_NAMES = frozenset({"event_log", "bind_key_public", "bind_key_name", "certify_info",
                            "certify_signature", "ak_certificate"})
VERDICTS = ("trusted", "refused")


class ReceiptError(CryptoError):
    """A receipt cannot be used."""


class ReceiptMalformed(ReceiptError):
    """The receipt envelope or its payload does not decode or has a bad field."""


class ReceiptKeyUnknown(ReceiptError):
    """The receipt is signed with a key id the verifier does not trust."""


class ReceiptSignatureInvalid(ReceiptError):
    """The signature does not verify: wrong key, or the receipt was altered."""


class ReceiptBindingMismatch(ReceiptError):
    """The receipt is not about the launch of this token or nonce."""


@dataclass(frozen=True)
class Receipt:
    """The signed facts of one attestation decision (no secret in any field)."""

    attestation_id: str
    launch_id: str
    host: str
    verdict: str
    issued_at: int
    requested_profile: str | None = None
    satisfied_profile: str | None = None
    check: str | None = None
    reason: str | None = None
    image_digest: str | None = None
    token_digest: str | None = None
    nonce_binding: str | None = None
    ttp_key_id: str | None = None
    evidence: Mapping[str, str] = field(default_factory=dict)
    version: int = RECEIPT_VERSION

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def issued_at_text(self) -> str:
        """``issued_at`` as ISO 8601 UTC."""
        return format_time(self.issued_at)

    @property
    def trusted(self) -> bool:
        """Whether the TTP released the secrets in this decision."""
        return self.verdict == "trusted"

    def to_json(self) -> dict:
        """The payload as a JSON-ready dict."""
        # Every other field is a str, int or None: no deep copy (dataclasses.asdict) needed.
        document = {item.name: getattr(self, item.name) for item in fields(self)}
        document["evidence"] = dict(sorted(self.evidence.items()))
        return document

    def payload_bytes(self) -> bytes:
        """Canonical JSON (sorted keys, no spaces, ASCII) of the payload."""
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"),
                          ensure_ascii=True).encode("ascii")


@dataclass(frozen=True)
class VerifiedReceipt:
    """A receipt whose signature verified, with the envelope it came in."""

    receipt: Receipt
    key_id: str
    document: Mapping[str, str]


def format_time(unix: int) -> str:
    """ISO 8601 UTC, seconds."""
    return datetime.datetime.fromtimestamp(unix, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _validate(receipt: Receipt) -> None:
    if receipt.version != RECEIPT_VERSION:
        raise ReceiptMalformed(f"receipt version {receipt.version!r} is not supported")
    for name in _TEXT_FIELDS:
        value = getattr(receipt, name)
        if not isinstance(value, str) or not 0 < len(value) <= 255:
            raise ReceiptMalformed(f"receipt field {name!r} must be a 1-255 character string")
    for name in _OPTIONAL_TEXT:
        value = getattr(receipt, name)
        if value is not None and (not isinstance(value, str) or len(value) > MAX_REASON):
            raise ReceiptMalformed(f"receipt field {name!r} must be null or a string of at "
                                   f"most {MAX_REASON} characters")
    if receipt.verdict not in VERDICTS:
        raise ReceiptMalformed(f"receipt verdict {receipt.verdict!r} is not one of {VERDICTS}")
    if not isinstance(receipt.issued_at, int) or isinstance(receipt.issued_at, bool) \
            or not 0 <= receipt.issued_at < 2**63:
        raise ReceiptMalformed("receipt field 'issued_at' must be a unix time in seconds")
    if receipt.image_digest is not None:
        try:
            ImageDigest.parse(receipt.image_digest)
        except (CryptoError, AttributeError) as exc:
            raise ReceiptMalformed(f"receipt field 'image_digest': {exc}") from None
    _validate_hex("token_digest", receipt.token_digest, 64)
    _validate_hex("nonce_binding", receipt.nonce_binding, 64)
    if receipt.ttp_key_id is not None and not (
            isinstance(receipt.ttp_key_id, str) and _KEY_ID_RE.fullmatch(receipt.ttp_key_id)):
        raise ReceiptMalformed("receipt field 'ttp_key_id' must be 16 lower-case hex characters")
    _validate_evidence(receipt.evidence)


def _validate_hex(name: str, value: object, size: int) -> None:
    if value is not None and not (isinstance(value, str) and len(value) == size
                                  and _HEX_RE.fullmatch(value)):
        raise ReceiptMalformed(f"receipt field {name!r} must be null or {size} lower-case "
                               "hex characters")


def _validate_evidence(evidence: object) -> None:
    if not isinstance(evidence, Mapping):
        raise ReceiptMalformed("receipt field 'evidence' must be an object")
    for name, value in evidence.items():
        if name not in EVIDENCE_NAMES:
            raise ReceiptMalformed(f"receipt evidence {str(name)[:32]!r} is not a known "
                                   "evidence name")
        if not isinstance(value, str) or not _HEX_RE.fullmatch(value):
            raise ReceiptMalformed(f"receipt evidence {name!r} must be lower-case hex")


# keys ---------------------------------------------------------------------


def receipt_key_id(public_key: ec.EllipticCurvePublicKey) -> str:
    """Hex of the first 8 bytes of SHA-256 over the key's DER SubjectPublicKeyInfo."""
    der = public_key.public_bytes(serialization.Encoding.DER,
                                  serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).digest()[:8].hex()


def load_receipt_public_key(pem: bytes | str) -> ec.EllipticCurvePublicKey:
    """A P-256 public key from PEM; ReceiptMalformed for anything else."""
    data = pem.encode("ascii", "replace") if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise ReceiptMalformed(f"receipt key is not a PEM public key "
                               f"({type(exc).__name__})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve,
                                                                          ec.SECP256R1):
        raise ReceiptMalformed("receipt key is not an ECDSA P-256 key")
    return key


def public_key_pem(public_key: ec.EllipticCurvePublicKey) -> str:
    """PEM SubjectPublicKeyInfo text."""
    return public_key.public_bytes(serialization.Encoding.PEM,
                                   serialization.PublicFormat.SubjectPublicKeyInfo).decode()


# signing and verification ---------------------------------------------------


def _signed_bytes(key_id: str, payload: bytes) -> bytes:
    return _SIGNING_LABEL + key_id.encode("ascii") + b"\x00" + payload


def sign_receipt(receipt: Receipt, private_key: ec.EllipticCurvePrivateKey) -> dict:
    """The signed receipt envelope (a JSON-ready dict)."""
    key_id = receipt_key_id(private_key.public_key())
    payload = receipt.payload_bytes()
    der = private_key.sign(_signed_bytes(key_id, payload), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return {"format": RECEIPT_FORMAT, "key_id": key_id, "algorithm": RECEIPT_ALGORITHM,
            "payload": b64url_encode(payload),
            "signature": b64url_encode(r.to_bytes(32, "big") + s.to_bytes(32, "big"))}


def verify_receipt(document: object,
                   public_keys: Mapping[str, ec.EllipticCurvePublicKey]) -> VerifiedReceipt:
    """Check the envelope and signature against ``public_keys`` (by key id); the receipt."""
    envelope = _envelope(document)
    key_id = envelope["key_id"]
    public_key = public_keys.get(key_id)
    if public_key is None:
        raise ReceiptKeyUnknown(f"receipt is signed with key {key_id}, which is not a "
                                "trusted TTP receipt key")
    payload, signature = _decode(envelope, "payload"), _decode(envelope, "signature")
    if len(payload) > MAX_PAYLOAD:
        raise ReceiptMalformed(f"receipt payload is larger than {MAX_PAYLOAD} bytes")
    if len(signature) != 64:
        raise ReceiptMalformed(f"receipt signature is {len(signature)} bytes, expected 64")
    der = encode_dss_signature(int.from_bytes(signature[:32], "big"),
                               int.from_bytes(signature[32:], "big"))
    try:
        public_key.verify(der, _signed_bytes(key_id, payload), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise ReceiptSignatureInvalid(f"receipt signature does not verify with TTP receipt "
                                      f"key {key_id} (altered or forged)") from None
    return VerifiedReceipt(parse_payload(payload), key_id, dict(envelope))


def read_unverified(document: object) -> tuple[str, Receipt]:
    """(key id, receipt) WITHOUT checking the signature: for display marked as unchecked."""
    envelope = _envelope(document)
    payload = _decode(envelope, "payload")
    if len(payload) > MAX_PAYLOAD:
        raise ReceiptMalformed(f"receipt payload is larger than {MAX_PAYLOAD} bytes")
    return envelope["key_id"], parse_payload(payload)


def _envelope(document: object) -> dict:
    if isinstance(document, str | bytes):
        try:
            document = json.loads(document)
        except ValueError:
            raise ReceiptMalformed("receipt is not JSON") from None
    if not isinstance(document, Mapping):
        raise ReceiptMalformed("receipt must be a JSON object")
    if document.get("format") != RECEIPT_FORMAT:
        raise ReceiptMalformed(f"receipt format {str(document.get('format'))[:40]!r} is not "
                               f"{RECEIPT_FORMAT!r}")
    if document.get("algorithm") != RECEIPT_ALGORITHM:
        raise ReceiptMalformed(f"receipt algorithm {str(document.get('algorithm'))[:20]!r} "
                               f"is not {RECEIPT_ALGORITHM}")
    key_id = document.get("key_id")
    if not isinstance(key_id, str) or not _KEY_ID_RE.fullmatch(key_id):
        raise ReceiptMalformed("receipt 'key_id' must be 16 lower-case hex characters")
    return dict(document)


def _decode(envelope: Mapping, name: str) -> bytes:
    value = envelope.get(name)
    if not isinstance(value, str) or len(value) > 2 * MAX_PAYLOAD:
        raise ReceiptMalformed(f"receipt {name!r} must be a base64url string")
    try:
        return b64url_decode(value)
    except ValueError as exc:
        raise ReceiptMalformed(f"receipt {name!r} is not base64url: {exc}") from None


def parse_payload(payload: bytes) -> Receipt:
    """The :class:`Receipt` in signed payload bytes; ReceiptMalformed on any flaw."""
    try:
        document = json.loads(payload.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise ReceiptMalformed("receipt payload is not ASCII JSON") from None
    if not isinstance(document, dict):
        raise ReceiptMalformed("receipt payload must be a JSON object")
    known = set(Receipt.__dataclass_fields__)
    unknown = sorted(set(document) - known)
    if unknown:
        raise ReceiptMalformed(f"receipt payload has unknown field {unknown[0][:32]!r}")
    missing = [name for name in ("attestation_id", "launch_id", "host", "verdict", "issued_at")
               if name not in document]
    if missing:
        raise ReceiptMalformed(f"receipt payload lacks field {missing[0]!r}")
    try:
        return Receipt(**document)
    except TypeError as exc:
        raise ReceiptMalformed(f"receipt payload: {exc}") from None


# values derived from N -------------------------------------------------------


def _hkdf(nonce: bytes, info: bytes) -> bytes:
    if not isinstance(nonce, bytes) or len(nonce) != 32:
        raise ReceiptError("a launch nonce must be 32 bytes")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(nonce)


def receipt_proof(nonce: bytes) -> bytes:
    """What the tenant presents (``X-Receipt-Proof``) to fetch its receipts."""
    return _hkdf(nonce, PROOF_INFO)


def receipt_auth(proof: bytes) -> bytes:
    """The one-way value the TTP stores: SHA-256 of the proof."""
    return hashlib.sha256(proof).digest()


def nonce_binding(nonce: bytes, token_digest: bytes) -> bytes:
    """HMAC over the token digest under a key derived from N (signed in the receipt)."""
    return hmac.new(_hkdf(nonce, BINDING_INFO), token_digest, hashlib.sha256).digest()


def check_binding(receipt: Receipt, *, nonce: bytes | None = None,
                  token_digest: bytes | None = None) -> None:
    """Raise ReceiptBindingMismatch unless the receipt is about this token and/or nonce."""
    if token_digest is not None and (receipt.token_digest is None or not hmac.compare_digest(
            receipt.token_digest, token_digest.hex())):
        raise ReceiptBindingMismatch("the receipt is about another launch token")
    if nonce is not None:
        if receipt.nonce_binding is None or receipt.token_digest is None:
            raise ReceiptBindingMismatch("the receipt carries no binding to a launch nonce")
        expected = nonce_binding(nonce, bytes.fromhex(receipt.token_digest))
        if not hmac.compare_digest(receipt.nonce_binding, expected.hex()):
            raise ReceiptBindingMismatch("the receipt is not bound to this launch nonce")
