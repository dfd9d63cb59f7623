"""Launch receipts at the TTP: the signing key, issuing, and the proof-gated lookup.

The receipt key is a dedicated ECDSA P-256 key (``receipt.key`` in the token
key directory, mode 0600), not the attestation CA key: the CA key only
certifies AKs, and a key that signs X.509 certificates should sign nothing
else (no cross-protocol confusion, and the CA key can move offline or into an
HSM without touching receipts). Its public key is published in ``GET
/v1/keys`` under ``receipt_keys``.

``GET /v1/receipts/{token digest}`` needs ``X-Receipt-Proof: base64url(HKDF(N,
"trusted-launch/v1 receipt"))``. The TTP stores only ``SHA-256(proof)`` per
decision and compares in constant time; an unknown digest (404) runs the same
comparison as a wrong proof (403).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import pathlib
import re
import tempfile
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from trusted_launch.crypto._encoding import b64url_decode
from trusted_launch.crypto.receipt import (
    MAX_REASON,
    RECEIPT_KEY_ALGORITHM,
    Receipt,
    public_key_pem,
    receipt_key_id,
    sign_receipt,
)
from trusted_launch.ttp.db.api import AttestationRecord, StoredReceipt, TTPDatabase
from trusted_launch.ttp.errors import APIError, BadRequest, NotFound
from trusted_launch.ttp.keystore import KeyStoreError

if TYPE_CHECKING:
    from trusted_launch.ttp.verifier import TokenFacts

RECEIPT_KEY_FILE = "receipt.key"
PROOF_HEADER = "X-Receipt-Proof"
_DIGEST_RE = re.compile(r"[0-9a-f]{64}")
_RECEIPT_EVIDENCE = ("event_log", "bind_key_public", "bind_key_name", "certify_info",
                     "certify_signature", "ak_certificate")
_DUMMY_AUTH = hashlib.sha256(b"trusted-launch/v1 no such receipt").hexdigest()


class WrongProof(APIError):
    """The receipt proof does not prove knowledge of this token's N (403)."""

    status, code = 403, "receipt_refused"


def _create_exclusive(path: pathlib.Path, data: bytes) -> None:
    """Write ``data`` to a new 0600 file; FileExistsError if another process won."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.link(tmp, path)  # atomic, and never replaces an existing key
    finally:
        pathlib.Path(tmp).unlink(missing_ok=True)


class ReceiptKey:
    """The TTP's receipt signing key in ``key_dir`` (created on first use)."""

    def __init__(self, key_dir: str | os.PathLike) -> None:
        self.path = pathlib.Path(key_dir) / RECEIPT_KEY_FILE
        self._key: ec.EllipticCurvePrivateKey | None = None

    def ensure(self) -> bool:
        """Create the key if missing; True if this call created it."""
        if self.path.exists():
            return False
        key = ec.generate_private_key(ec.SECP256R1())
        try:
            _create_exclusive(self.path, key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption()))
        except FileExistsError:
            return False
        return True

    def private_key(self) -> ec.EllipticCurvePrivateKey:
        """The signing key (loaded once)."""
        if self._key is None:
            try:
                key = serialization.load_pem_private_key(self.path.read_bytes(), password=None)
            except (OSError, ValueError, TypeError) as exc:
                raise KeyStoreError(f"{self.path}: cannot load the receipt key "
                                    f"({type(exc).__name__})") from exc
            if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(
                    key.curve, ec.SECP256R1):
                raise KeyStoreError(f"{self.path}: the receipt key is not an EC P-256 key")
            self._key = key
        return self._key

    def key_id(self) -> str:
        """Key id as receipts name it."""
        return receipt_key_id(self.private_key().public_key())

    def publication(self) -> dict:
        """The ``receipt_keys`` entry of GET /v1/keys."""
        public = self.private_key().public_key()
        return {"id": receipt_key_id(public), "algorithm": RECEIPT_KEY_ALGORITHM,
                "public_key": public_key_pem(public)}


class ReceiptIssuer:
    """Signs the receipt of each decision and answers the tenant's receipt requests."""

    def __init__(self, db: TTPDatabase, key: ReceiptKey,
                 clock: Callable[[], float] = time.time) -> None:
        self.db, self.key, self.clock = db, key, clock

    def issue(self, record: AttestationRecord, token_digest: bytes | None,
              facts: TokenFacts | None) -> StoredReceipt:
        """The signed receipt of ``record`` (not yet stored); no N, no token in it."""
        receipt = Receipt(
            attestation_id=record.id, launch_id=record.launch_id, host=record.host,
            verdict=record.verdict, issued_at=int(self.clock()),
            requested_profile=record.requested_profile,
            satisfied_profile=record.satisfied_profile, check=record.check,
            reason=None if record.reason is None else record.reason[:MAX_REASON],
            image_digest=getattr(facts, "image_digest", None),
            token_digest=token_digest.hex() if token_digest else None,
            nonce_binding=facts.nonce_binding.hex() if facts is not None else None,
            ttp_key_id=getattr(facts, "ttp_key_id", None),
            evidence={name: value for name, value in record.evidence_digests.items()
                      if name in _RECEIPT_EVIDENCE})
        document = sign_receipt(receipt, self.key.private_key())
        return StoredReceipt(
            attestation_id=record.id,
            document=json.dumps(document, sort_keys=True, separators=(",", ":")),
            token_digest=receipt.token_digest,
            receipt_auth=facts.receipt_auth.hex() if facts is not None else None)

    def lookup(self, token_digest_hex: str, proof_header: str | None) -> list[dict]:
        """The signed receipts of a token for a holder of its N; 404/403 otherwise."""
        if not _DIGEST_RE.fullmatch(token_digest_hex):
            raise NotFound("receipt", "receipts are addressed by the 64-hex token digest")
        presented = _proof_auth(proof_header)
        stored = self.db.receipts_for_token(token_digest_hex)
        matching = [row for row in stored
                    if hmac.compare_digest(row.receipt_auth or _DUMMY_AUTH, presented)]
        if not stored:
            hmac.compare_digest(_DUMMY_AUTH, presented)  # the same work as a wrong proof
            raise NotFound("receipt", "no decision was made about this token")
        if not matching:
            raise WrongProof("receipt_proof", "the proof does not show knowledge of this "
                                              "token's launch nonce")
        return [json.loads(row.document) for row in matching]


def _proof_auth(header: str | None) -> str:
    """SHA-256 hex of the presented proof; 400 if it is absent or not 32 base64url bytes."""
    if not header:
        raise BadRequest("receipt_proof", f"the {PROOF_HEADER} header is required")
    try:
        proof = b64url_decode(header.strip())
    except ValueError:
        raise BadRequest("receipt_proof", f"{PROOF_HEADER} is not base64url") from None
    if len(proof) != 32:
        raise BadRequest("receipt_proof", f"{PROOF_HEADER} must encode 32 bytes")
    return hashlib.sha256(proof).hexdigest()
