"""The attestation flow around the verifier: host and AK lookup, replay, durable audit.

Order matters: the answer that carries the released secrets is produced
only after the used-token row and the audit record are committed together.
A token is bound to the launch id (instance uuid) that first redeems it,
even with several worker processes: a later redemption for the same launch
id (the instance moved, or re-attests before a restart; the host runs the
whole protocol again) is allowed and audited as a re-attestation, one for
another launch id is refused as ``token_replayed``, and so is the very same
certify evidence presented twice (so concurrent identical requests yield
exactly one release).

Per worker, a bounded LRU keeps each presented AK certificate once it was
verified against the CA (keyed by the SHA-256 of the certificate and of the
CA certificate) and each enrolled AK public area once parsed; the validity
period, the host name and the AK match are still checked on every request.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from oslo_log import log as logging

from trusted_launch.ttp.db.api import (
    AttestationRecord,
    DatabaseError,
    TokenAlreadyUsed,
    TTPDatabase,
)
from trusted_launch.ttp.errors import BadRequest, Refused, ServiceUnavailable
from trusted_launch.ttp.lru import LRUCache
from trusted_launch.ttp.receipts import ReceiptIssuer

LOG = logging.getLogger(__name__)
#: Verified AK certificates and parsed enrolled AKs kept per worker.
CACHED_CERTIFICATES = 1024


@dataclass(frozen=True)
class RequestSummary:
    """What the audit record may keep of a request (no token, no evidence bytes)."""

    requester: str
    host: str
    launch_id: str


def _spki(key) -> bytes:
    return key.public_bytes(serialization.Encoding.DER,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass(frozen=True)
class VerifiedCertificate:
    """What the checks need of an AK certificate whose CA signature verified."""

    not_before: datetime.datetime
    not_after: datetime.datetime
    common_names: tuple[str, ...]
    spki: bytes


def verify_ak_certificate(pem: bytes, ca_cert: x509.Certificate) -> VerifiedCertificate:
    """Parse ``pem`` and verify it was issued by ``ca_cert``; Refused otherwise."""
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise Refused("ak_certificate", "not a PEM X.509 certificate") from exc
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise Refused("ak_certificate", "not issued by this TTP's attestation CA") from exc
    names = tuple(a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME))
    return VerifiedCertificate(cert.not_valid_before_utc, cert.not_valid_after_utc, names,
                               _spki(cert.public_key()))


def check_ak_certificate(pem: bytes, host: str, ak_public_key, ca_cert: x509.Certificate,
                         now: datetime.datetime, cache: LRUCache | None = None) -> None:
    """The presented AK certificate: issued by our CA, for ``host``, over the enrolled AK.

    With ``cache``, the CA signature of a certificate is verified once per
    (certificate, CA certificate) pair; every other check runs each time.
    """
    if cache is None:
        cert = verify_ak_certificate(pem, ca_cert)
    else:
        ca_digest = hashlib.sha256(ca_cert.public_bytes(serialization.Encoding.DER)).digest()
        cert = cache.get_or_make(("ak_certificate", hashlib.sha256(pem).digest(), ca_digest),
                                 lambda: verify_ak_certificate(pem, ca_cert))
    if not cert.not_before <= now <= cert.not_after:
        raise Refused("ak_certificate", "outside its validity period")
    if list(cert.common_names) != [host]:
        raise Refused("ak_certificate", f"issued to {list(cert.common_names)!r}, not to host "
                                        f"{host!r}")
    if cert.spki != _spki(ak_public_key):
        raise Refused("ak_certificate", "certifies a key other than the host's enrolled AK")


class AttestationService:
    """POST /v1/attestations: parse, look up, verify, record, answer."""

    def __init__(self, db: TTPDatabase, ca_certificate: Callable[[], x509.Certificate],
                 make_verifier: Callable[..., object],
                 receipts: ReceiptIssuer | None = None) -> None:
        self.db = db
        self.ca_certificate = ca_certificate
        self.make_verifier = make_verifier
        self.receipts = receipts
        self.cache = LRUCache(CACHED_CERTIFICATES, name="ak_identities")

    def attest(self, body: object, requester: str) -> tuple[int, dict]:
        """(HTTP status, JSON body) for one attestation request."""
        request = self._parse(body)
        summary = RequestSummary(requester, request.host, request.launch_id)
        attestation_id = str(uuid.uuid4())
        try:
            ak_public, profile_revision = self._host_ak(request)
        except Refused as refusal:
            return self._refuse(attestation_id, summary,
                                _token_only(self.make_verifier(), request),
                                refusal.check, refusal.reason)
        verifier = self.make_verifier(profile_revision=profile_revision)
        decision = verifier.verify(request, ak_public)
        if not decision.trusted:
            return self._refuse(attestation_id, summary, decision, decision.check,
                                decision.reason)
        return self._release(attestation_id, summary, decision)

    @staticmethod
    def _parse(body: object):
        from trusted_launch.ttp import verifier
        request_invalid = getattr(verifier, "RequestInvalid", None)
        if not isinstance(body, dict):
            raise BadRequest("body", "must be a JSON object")
        try:
            return verifier.AttestationRequest.from_json(body)
        except Exception as exc:
            if request_invalid is not None and isinstance(exc, request_invalid):
                raise BadRequest(getattr(exc, "check", "body"),
                                 getattr(exc, "reason", str(exc))) from exc
            raise

    def _host_ak(self, request):
        """(the host's enrolled AK, the profile revision read with it); Refused if unusable."""
        from trusted_launch.evidence.tpm2 import parse_public
        host = self.db.host_ak(request.host)
        if host is None or host[0] != "active" or not host[1]:
            raise Refused("host_unknown", f"host {request.host!r} is not enrolled and active")
        encoded, profile_revision = host[1], host[2]
        ak_public = self.cache.get_or_make(
            ("ak_public", encoded), lambda: parse_public(base64.b64decode(encoded), tpm2b=True))
        ak_key = self.cache.get_or_make(("ak_key", encoded), ak_public.public_key)
        check_ak_certificate(request.ak_certificate_pem, request.host, ak_key,
                             self.ca_certificate(), datetime.datetime.now(datetime.UTC),
                             cache=self.cache)
        return ak_public, profile_revision

    def _record(self, record: AttestationRecord, decision, **token) -> dict | None:
        """Store the record (and its signed receipt, in one transaction); the receipt.

        A redemption that re-attests the token's own launch is logged as such.
        """
        receipt = None
        if self.receipts is not None:
            receipt = self.receipts.issue(record, getattr(decision, "token_digest", None),
                                          getattr(decision, "token_facts", None))
        try:
            first = self.db.record_attestation(record, receipt=receipt, **token)
        except DatabaseError as exc:
            LOG.error("attestation %s not recorded: %s", record.id, exc)
            raise ServiceUnavailable("database", "the audit record could not be stored; "
                                                 "nothing was released") from exc
        if token:
            self._log_redemption(record, first)
        return None if receipt is None else json.loads(receipt.document)

    @staticmethod
    def _log_redemption(record: AttestationRecord, first: str | None) -> None:
        if first is not None:
            LOG.info("attestation %s re-attests launch %s on host %s (token first redeemed "
                     "in attestation %s)", record.id, record.launch_id, record.host, first)

    def _refuse(self, attestation_id: str, summary: RequestSummary, decision, check: str,
                reason: str) -> tuple[int, dict]:
        record = AttestationRecord(
            id=attestation_id, requester=summary.requester, host=summary.host,
            launch_id=summary.launch_id, verdict="refused",
            requested_profile=getattr(decision, "requested_profile", None),
            satisfied_profile=getattr(decision, "satisfied_profile", None),
            check=check, reason=reason,
            evidence_digests=dict(getattr(decision, "evidence_digests", None) or {}))
        self._record(record, decision)
        LOG.info("attestation %s refused: host=%s launch=%s check=%s", attestation_id,
                 summary.host, summary.launch_id, check)
        refusal = Refused(check, reason, extra={"attestation_id": attestation_id})
        return refusal.status, refusal.body()

    def _release(self, attestation_id: str, summary: RequestSummary, decision
                 ) -> tuple[int, dict]:
        record = AttestationRecord(
            id=attestation_id, requester=summary.requester, host=summary.host,
            launch_id=summary.launch_id, verdict="trusted",
            requested_profile=decision.requested_profile,
            satisfied_profile=decision.satisfied_profile,
            evidence_digests=dict(decision.evidence_digests or {}))
        if not decision.token_digest or not decision.released:
            return self._refuse(attestation_id, summary, decision, "token_malformed",
                                "the verifier gave no token digest; nothing released")
        expires_at = int(getattr(decision, "token_expires_at", 0) or 0)
        try:
            receipt = self._record(record, decision, token_digest=decision.token_digest,
                                   certify_digest=decision.evidence_digests.get("certify_info"),
                                   expires_at=expires_at)
        except TokenAlreadyUsed as exc:
            return self._refuse(str(uuid.uuid4()), summary, decision, "token_replayed",
                                str(exc) or "this launch token was already redeemed")
        LOG.info("attestation %s trusted: host=%s launch=%s profile=%s satisfied=%s",
                 attestation_id, summary.host, summary.launch_id, decision.requested_profile,
                 decision.satisfied_profile)
        return 200, {"attestation_id": attestation_id, "verdict": "trusted",
                     "profile": decision.requested_profile,
                     "satisfied_profile": decision.satisfied_profile,
                     "released": base64.b64encode(decision.released).decode(),
                     **({"receipt": receipt} if receipt is not None else {})}


def _token_only(verifier, request):
    """A refused decision carrying only what the token says (for refusals before verifying)."""
    inspect = getattr(verifier, "inspect_token", None)
    if inspect is None:
        return None
    from trusted_launch.ttp.verifier import Decision, evidence_digests
    digest, profile, facts = inspect(request.token)
    return Decision(trusted=False, check=None, reason=None, requested_profile=profile,
                    satisfied_profile=None, token_digest=digest,
                    evidence_digests=evidence_digests(request), token_facts=facts)
