"""Host enrollment: operator consent, EK certificate chain, AK checks, credential challenge.

A host enrolls only under the operator's registration of its name with its
EK certificate's SHA-256 (or an EK the operator approved after the host
first presented it). It proves that its AK lives in the TPM whose EK
certificate it shows: the TTP encrypts a random secret to the EK bound to the
AK's Name (TPM2_MakeCredential, done in software here); only that TPM can
recover it with TPM2_ActivateCredential. The TTP keeps only the secret's
SHA-256, one live challenge per (host, AK): a later request never replaces
or cancels one, and a wrong answer is counted, rate-limited per client and
logged, not acted upon. A new AK (after a TPM clear) needs the operator's
approval again; renewing the certificate of the enrolled AK does not.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import re
import secrets
import time
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from oslo_log import log as logging

from trusted_launch.ttp.db.access import AccessStore, NewChallenge, Outcome
from trusted_launch.ttp.errors import (
    APIError,
    BadRequest,
    Conflict,
    EnrollmentRefused,
    TooManyRequests,
    unknown_field_check,
)
from trusted_launch.ttp.keystore import AttestationCA
from trusted_launch.ttp.ratelimit import FailureLimiter

LOG = logging.getLogger(__name__)
HOST_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")
MAX_CERT_CHAIN = 8
#: Live credential challenges per host (each for another AK).
MAX_LIVE_CHALLENGES = 4
#: Wrong activation secrets per (client address, host) in ACTIVATION_WINDOW seconds.
MAX_WRONG_ANSWERS = 5
ACTIVATION_WINDOW = 300.0
# TPMA_OBJECT bits (TPM 2.0 Part 2, 8.3)
FIXED_TPM, FIXED_PARENT, SENSITIVE_DATA_ORIGIN = 0x2, 0x10, 0x20
RESTRICTED, DECRYPT, SIGN = 0x10000, 0x20000, 0x40000
AK_REQUIRED = FIXED_TPM | FIXED_PARENT | SENSITIVE_DATA_ORIGIN | RESTRICTED | SIGN


def decode_b64(value: object, field: str, *, limit: int = 8192) -> bytes:
    """Strict standard base64 of at most ``limit`` decoded bytes, else BadRequest naming field."""
    if not isinstance(value, str) or not value:
        raise BadRequest(field, "must be a non-empty base64 string")
    if len(value) > (limit * 4) // 3 + 4:
        raise BadRequest(field, f"longer than {limit} bytes")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest(field, "not valid base64") from exc


def check_fields(body: dict, allowed: tuple[str, ...]) -> None:
    """Refuse unknown fields (fail closed on what we do not understand)."""
    for name in body:
        if name not in allowed:
            raise BadRequest(*unknown_field_check(name))


def check_host_name(name: object, field: str = "host") -> str:
    """A DNS-like host name, else BadRequest."""
    if not isinstance(name, str) or not HOST_NAME.match(name):
        raise BadRequest(field, "must be 1-253 characters of letters, digits, '.', '_', '-'")
    return name


@dataclass(frozen=True)
class AKInfo:
    """What enrollment needs of an AK public area."""

    attributes: int
    name: bytes
    public_key: object  # cryptography public key


def parse_ak_public(data: bytes) -> AKInfo:
    """Parse a TPM2B_PUBLIC with the project's pure TPM 2.0 parser."""
    from trusted_launch.evidence.errors import EvidenceError
    from trusted_launch.evidence.tpm2 import parse_public
    try:
        public = parse_public(data, tpm2b=True)
        return AKInfo(int(public.object_attributes), bytes(public.name), public.public_key())
    except (EvidenceError, ValueError) as exc:
        raise BadRequest("ak_public", f"not a TPM2B_PUBLIC: {exc}") from exc


def check_ak(info: AKInfo) -> None:
    """The AK must be a restricted signing key that never leaves its TPM."""
    missing = AK_REQUIRED & ~info.attributes
    if missing or info.attributes & DECRYPT:
        raise EnrollmentRefused(
            "ak_attributes", f"AK attributes 0x{info.attributes:08x} lack 0x{missing:08x} "
            "or include decrypt (need restricted, sign, fixedTPM, fixedParent, "
            "sensitiveDataOrigin)")
    key = info.public_key
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return
    if isinstance(key, rsa.RSAPublicKey) and key.key_size >= 2048:
        return
    raise EnrollmentRefused("ak_attributes", "AK must be an ECC P-256 or RSA >= 2048 key")


def load_ca_certificates(paths: list[str]) -> list[x509.Certificate]:
    """All certificates in the configured vendor CA PEM files."""
    certs: list[x509.Certificate] = []
    for path in paths:
        with open(path, "rb") as handle:
            certs.extend(x509.load_pem_x509_certificates(handle.read()))
    return certs


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def verify_ek_chain(ek_cert: x509.Certificate, anchors: list[x509.Certificate],
                    now: datetime.datetime) -> None:
    """EK certificate -> configured CA certificates, each signature and validity checked."""
    current, seen = ek_cert, 0
    while seen < MAX_CERT_CHAIN:
        if not current.not_valid_before_utc <= now <= current.not_valid_after_utc:
            raise EnrollmentRefused("ek_certificate_chain",
                                    f"certificate {current.subject.rfc4514_string()!r} "
                                    "is outside its validity period")
        issuers = [ca for ca in anchors if ca.subject == current.issuer and _is_ca(ca)
                   and _issued_by(current, ca)]
        if not issuers:
            raise EnrollmentRefused("ek_certificate_chain",
                                    f"no configured vendor CA issued "
                                    f"{current.subject.rfc4514_string() or 'the EK certificate'!r}")
        issuer = issuers[0]
        if issuer.subject == issuer.issuer:
            return
        current, seen = issuer, seen + 1
    raise EnrollmentRefused("ek_certificate_chain", "certificate chain too long")


def _same_public_key(a: object, b: object) -> bool:
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    return a.public_bytes(serialization.Encoding.DER, fmt) == \
        b.public_bytes(serialization.Encoding.DER, fmt)  # type: ignore[attr-defined]


def ek_public_key(ek_public: bytes):
    """(TPM2B_PUBLIC object for MakeCredential, cryptography public key) of the EK."""
    from tpm2_pytss.types import TPM2B_PUBLIC
    try:
        public, used = TPM2B_PUBLIC.unmarshal(ek_public)
        if used != len(ek_public):
            raise ValueError(f"{len(ek_public) - used} trailing bytes")
        key = serialization.load_der_public_key(public.publicArea.to_der())
    except Exception as exc:  # tpm2_pytss raises assorted types on bad input
        raise BadRequest("ek_public", f"not an RSA/ECC TPM2B_PUBLIC: {exc}") from exc
    return public, key


@dataclass(frozen=True)
class Challenge:
    """The answer to POST /v1/hosts."""

    host: str
    credential_blob: bytes
    encrypted_secret: bytes

    def to_json(self) -> dict:
        return {"host": self.host,
                "credential_blob": base64.b64encode(self.credential_blob).decode(),
                "encrypted_secret": base64.b64encode(self.encrypted_secret).decode()}


def ek_fingerprint(ek_cert: x509.Certificate) -> str:
    """The SHA-256 (hex) of the EK certificate's DER: how operators register a host's TPM."""
    return hashlib.sha256(ek_cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _refusal(outcome: Outcome, host: str, fingerprint: str) -> APIError:
    """The answer to an enrollment the registration or the challenge store refused."""
    if outcome is Outcome.NOT_REGISTERED:
        return EnrollmentRefused("host_not_registered", f"host {host!r} is not registered; "
                                 "an operator must run 'trusted-launch-ttp-manage host add'")
    if outcome is Outcome.AWAITING_APPROVAL:
        return EnrollmentRefused("host_awaiting_approval",
                                 f"EK certificate sha256 {fingerprint} awaits the operator's "
                                 f"approval ('trusted-launch-ttp-manage host approve {host}')")
    if outcome is Outcome.EK_MISMATCH:
        return EnrollmentRefused("host_ek_mismatch",
                                 f"EK certificate sha256 {fingerprint} is not the EK "
                                 f"registered for host {host!r}")
    if outcome is Outcome.NOT_APPROVED:
        return EnrollmentRefused("enrollment_not_approved",
                                 f"host {host!r} is enrolled with another AK; enrolling a new "
                                 "AK needs the operator's approval ('trusted-launch-ttp-manage "
                                 "host approve')")
    if outcome is Outcome.CHALLENGE_PENDING:
        return Conflict("enrollment_challenge_pending",
                        "a challenge for this AK is live: answer it, or enroll again once it "
                        "expired")
    if outcome is Outcome.TOO_MANY_CHALLENGES:
        return TooManyRequests("enrollment_challenges_exhausted",
                               f"host {host!r} has {MAX_LIVE_CHALLENGES} live challenges; "
                               "retry once they expired")
    raise AssertionError(f"not a refusal: {outcome}")


class Enrollment:
    """Runs host enrollment and activation against the registrations and the attestation CA."""

    def __init__(self, access: AccessStore, ca: AttestationCA,
                 vendor_cas: list[x509.Certificate], *, challenge_ttl: int,
                 certificate_days: int) -> None:
        self.access, self.ca, self.vendor_cas = access, ca, vendor_cas
        self.challenge_ttl, self.certificate_days = challenge_ttl, certificate_days
        self.wrong_answers = FailureLimiter(MAX_WRONG_ANSWERS, ACTIVATION_WINDOW)

    def enroll(self, body: dict) -> Challenge:
        """Validate EK certificate, EK public and AK; store the challenge; return it."""
        check_fields(body, ("host", "ek_certificate", "ek_public", "ak_public"))
        host = check_host_name(body.get("host"))
        cert_der = decode_b64(body.get("ek_certificate"), "ek_certificate")
        try:
            ek_cert = x509.load_der_x509_certificate(cert_der)
        except ValueError as exc:
            raise BadRequest("ek_certificate", "not a DER X.509 certificate") from exc
        ek_public = decode_b64(body.get("ek_public"), "ek_public", limit=1024)
        ak_public = decode_b64(body.get("ak_public"), "ak_public", limit=1024)
        verify_ek_chain(ek_cert, self.vendor_cas, datetime.datetime.now(datetime.UTC))
        ek_object, ek_key = ek_public_key(ek_public)
        if not _same_public_key(ek_key, ek_cert.public_key()):
            raise EnrollmentRefused("ek_public_mismatch",
                                    "ek_public is not the key of the EK certificate")
        ak = parse_ak_public(ak_public)
        check_ak(ak)
        return self._challenge(host, ek_fingerprint(ek_cert), ek_object, ek_public,
                               ak_public, ak)

    def _challenge(self, host, fingerprint, ek_object, ek_public, ak_public, ak) -> Challenge:
        from tpm2_pytss.types import TPM2B_NAME
        from tpm2_pytss.utils import make_credential
        secret = secrets.token_bytes(32)
        try:
            blob, encrypted = make_credential(ek_object, secret, TPM2B_NAME(ak.name))
        except (ValueError, TypeError) as exc:  # e.g. symmetric parameters no TPM would have
            raise BadRequest("ek_public", f"cannot make a credential for this EK: {exc}"
                             ) from None
        now = int(time.time())
        outcome = self.access.open_challenge(NewChallenge(
            host=host, ak_name=ak.name.hex(), ek_cert_fingerprint=fingerprint,
            ek_public=base64.b64encode(ek_public).decode(),
            ak_public=base64.b64encode(ak_public).decode(),
            credential_digest=hashlib.sha256(secret).hexdigest(),
            expires_at=now + self.challenge_ttl), now, MAX_LIVE_CHALLENGES)
        if outcome is not Outcome.DONE:
            LOG.warning("enrollment of %s refused (%s): EK %s, AK %s", host, outcome.value,
                        fingerprint[:16], ak.name.hex()[:20])
            raise _refusal(outcome, host, fingerprint)
        LOG.info("enrollment of %s: challenge issued (EK %s, AK %s)", host, fingerprint[:16],
                 ak.name.hex()[:20])
        return Challenge(host, blob.marshal(), encrypted.marshal())

    def activate(self, host: str, body: dict, client: str) -> str:
        """Check the recovered secret; make the AK active; return its certificate (PEM).

        ``client`` (the caller's address) keys the limit on wrong answers.
        """
        check_host_name(host)
        check_fields(body, ("secret",))
        secret = decode_b64(body.get("secret"), "secret", limit=64)
        wait = self.wrong_answers.retry_after((client, host))
        if wait:
            raise TooManyRequests("activation_rate_limited",
                                  f"too many wrong answers for host {host!r} from this client; "
                                  f"retry in {wait} s", headers={"Retry-After": str(wait)})
        outcome, ak_public = self.access.answer_challenge(
            host, hashlib.sha256(secret).hexdigest(), int(time.time()))
        if outcome is not Outcome.DONE or ak_public is None:  # unregistered alike: no probe
            self.wrong_answers.failed((client, host))
            LOG.warning("activation of %s refused (%s) from %s", host, outcome.value, client)
            raise EnrollmentRefused("activation_failed",
                                    "the secret answers no live challenge of this host (a "
                                    "wrong answer changes nothing; enroll again after expiry)")
        ak = parse_ak_public(base64.b64decode(ak_public))
        cert = self.ca.issue_ak_certificate(host, ak.public_key, self.certificate_days)
        LOG.info("host %s activated; AK certificate serial %x issued", host, cert.serial_number)
        return cert.public_bytes(serialization.Encoding.PEM).decode()
