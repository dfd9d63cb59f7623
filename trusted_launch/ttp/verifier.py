"""The TTP's verification core: steps 8-11 of the trusted launch protocol.

:class:`LaunchVerifier` is pure (no I/O, no database): given a validated
:class:`AttestationRequest` and the host's enrolled AK, it opens the token,
proves that the presented bind key lives in the host's TPM and can only be
used in the boot state that the event log describes, judges that state
against the requested security profile and, only if everything holds,
encrypts {N, H} to the bind key. Every refusal names a stable check (see the
API contract) and a reason that never contains N or any other secret.
Replay protection and host/AK lookup are the service's job.

What an event log proves (parsed, replayed over the selected PCRs) and how a
profile set judges it are kept in an :class:`EvidenceCache` keyed by the
SHA-256 of the exact log bytes, the PCR selection and (for verdicts) a
fingerprint of the profile set's content and the requested profile. The
token, the certify signature and binding, the bind key's attributes and its
PCR policy are checked on every request: they are never cached.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from trusted_launch.crypto._encoding import b64url_decode
from trusted_launch.crypto.binding import certify_qualifying_data
from trusted_launch.crypto.errors import (
    SealingError,
    TokenError,
    TokenExpired,
    UnknownTokenKey,
)
from trusted_launch.crypto.receipt import nonce_binding, receipt_auth, receipt_proof
from trusted_launch.crypto.sealing import ReleasedSecrets, release_aad, seal_to_bind_key
from trusted_launch.crypto.token import LaunchToken, open_token, token_digest
from trusted_launch.evidence.algorithms import HashAlg
from trusted_launch.evidence.errors import EvidenceError
from trusted_launch.evidence.eventlog import Event, EventLog, parse_event_log, replay
from trusted_launch.evidence.tpm2 import (
    AttestType,
    ObjectAttributes,
    PCRSelection,
    PublicArea,
    parse_attest,
    parse_public,
    parse_signature,
    policy_pcr_digest,
    verify_signature,
    with_initial_values,
)
from trusted_launch.policy import ProfileSet, UnknownProfile, evaluate_for_request
from trusted_launch.ttp.lru import LRUCache
from trusted_launch.ttp.requests import AttestationRequest, RequestInvalid

__all__ = ["AttestationRequest", "Decision", "EvidenceCache", "LaunchVerifier", "Refusal",
           "RequestInvalid", "TokenFacts"]

PcrValues = dict[HashAlg, dict[int, bytes]]

REQUIRED_ATTRIBUTES = (ObjectAttributes.FIXED_TPM | ObjectAttributes.FIXED_PARENT
                       | ObjectAttributes.SENSITIVE_DATA_ORIGIN | ObjectAttributes.DECRYPT)
FORBIDDEN_ATTRIBUTES = (ObjectAttributes.SIGN_ENCRYPT | ObjectAttributes.RESTRICTED
                        | ObjectAttributes.USER_WITH_AUTH)
POLICY_NAME_ALGS = frozenset({HashAlg.SHA256, HashAlg.SHA384, HashAlg.SHA512})
AK_REQUIRED_ATTRIBUTES = ObjectAttributes.SIGN_ENCRYPT | ObjectAttributes.RESTRICTED
EV_NO_ACTION = 0x3
#: Distinct event logs (per PCR selection) whose replay is kept; verdicts kept.
CACHED_LOGS = 128
CACHED_VERDICTS = 1024


@dataclass(frozen=True)
class TokenFacts:
    """What a receipt may say about an opened token: no N, only values derived one-way."""

    image_digest: str
    ttp_key_id: str
    receipt_auth: bytes = field(repr=False)  # SHA-256(HKDF(N, "... receipt"))
    nonce_binding: bytes = field(repr=False)  # HMAC(HKDF(N, "... receipt-binding"), digest)


def token_facts(text: str, token: LaunchToken, digest: bytes) -> TokenFacts:
    """The receipt facts of an opened token (``text`` already decoded once)."""
    return TokenFacts(image_digest=str(token.image_digest),
                      ttp_key_id=b64url_decode(text.strip())[1:9].hex(),
                      receipt_auth=receipt_auth(receipt_proof(token.nonce)),
                      nonce_binding=nonce_binding(token.nonce, digest))


@dataclass(frozen=True)
class Decision:
    """The verifier's answer; ``released`` (the sealed envelope) is kept out of repr."""

    trusted: bool
    check: str | None
    reason: str | None
    requested_profile: str | None
    satisfied_profile: str | None
    token_digest: bytes | None
    evidence_digests: Mapping[str, str]
    released: bytes | None = field(default=None, repr=False)
    token_expires_at: int | None = None  # keep the replay record at least this long
    token_facts: TokenFacts | None = None  # for the receipt; None if the token did not open


class Refusal(Exception):
    """Internal: one failed check; becomes a refused :class:`Decision`."""

    def __init__(self, check: str, reason: str) -> None:
        super().__init__(f"{check}: {reason}")
        self.check = check
        self.reason = reason


@dataclass
class _Progress:
    """What is known so far, reported on refusals as well as on success."""

    evidence_digests: dict[str, str]
    token_digest: bytes | None = None
    requested_profile: str | None = None
    token_expires_at: int | None = None
    token_facts: TokenFacts | None = None

    def refuse(self, refusal: Refusal) -> Decision:
        return Decision(trusted=False, check=refusal.check, reason=refusal.reason,
                        requested_profile=self.requested_profile, satisfied_profile=None,
                        token_digest=self.token_digest,
                        evidence_digests=dict(self.evidence_digests),
                        token_expires_at=self.token_expires_at, token_facts=self.token_facts)


@dataclass(frozen=True)
class _Replayed:
    """What one event log proves under one PCR selection (no bind key, no profile)."""

    proven: PcrValues
    view: EventLog  # proven_view(log, selection), what profiles may judge
    policy_digests: dict[HashAlg, bytes] = field(default_factory=dict)


class EvidenceCache:
    """Replayed event logs and profile verdicts, reused across requests (thread-safe).

    A replay is keyed by (SHA-256 of the log bytes, PCR selection); a verdict
    by that plus the profile set's content fingerprint and the requested
    profile. Refusals that depend only on those inputs are cached as
    (check, reason). Size 0 disables caching.
    """

    def __init__(self, logs: int = CACHED_LOGS, verdicts: int = CACHED_VERDICTS) -> None:
        self.replays = LRUCache(logs, name="verifier_replays")
        self.verdicts = LRUCache(verdicts, name="verifier_verdicts")


#: The process-wide cache the service's per-request verifiers share.
SHARED_CACHE = EvidenceCache()
_FINGERPRINTS: weakref.WeakKeyDictionary[ProfileSet, str] = weakref.WeakKeyDictionary()
_FINGERPRINT_LOCK = threading.Lock()


def profile_set_fingerprint(profiles: ProfileSet) -> str:
    """SHA-256 hex over every profile's full document: any change makes a new value."""
    with _FINGERPRINT_LOCK:
        known = _FINGERPRINTS.get(profiles)
    if known is not None:
        return known
    documents = [profile.to_document() for profile in profiles]
    fingerprint = hashlib.sha256(json.dumps(documents, sort_keys=True).encode()).hexdigest()
    with _FINGERPRINT_LOCK:
        _FINGERPRINTS[profiles] = fingerprint
    return fingerprint


class LaunchVerifier:
    """Verifies launch evidence and releases the tenant's secrets (steps 8-11)."""

    def __init__(self, *, token_keys: Mapping[str, X25519PrivateKey], profiles: ProfileSet,
                 required_pcrs: PCRSelection, clock: Callable[[], float] = time.time,
                 cache: EvidenceCache | None = None) -> None:
        self._token_keys = token_keys
        self._profiles = profiles
        self._required_pcrs = required_pcrs
        self._clock = clock
        self._cache = SHARED_CACHE if cache is None else cache

    def verify(self, request: AttestationRequest, ak_public: PublicArea) -> Decision:
        """Run every check in protocol order; the first failure refuses."""
        progress = _Progress(evidence_digests=evidence_digests(request))
        try:
            return self._verify(request, ak_public, progress)
        except Refusal as refusal:
            return progress.refuse(refusal)

    def _verify(self, request: AttestationRequest, ak_public: PublicArea,
                progress: _Progress) -> Decision:
        token = self._open_token(request.token, progress)
        bind_key = _parse_bind_key(request.bind_key_public)
        progress.evidence_digests["bind_key_name"] = bind_key.name.hex()
        _check_certify(request, ak_public, bind_key)
        _check_attributes(bind_key)
        self._check_selection(request.bind_key_pcrs)
        log_key = (progress.evidence_digests["event_log"], request.bind_key_pcrs.banks)
        replayed = self._replayed(log_key, request.event_log, request.bind_key_pcrs)
        _check_policy(bind_key, request.bind_key_pcrs, replayed)
        satisfied = self._judged(log_key, token.profile, replayed)
        released = _release(bind_key, token, request.launch_id)
        return Decision(trusted=True, check=None, reason=None,
                        requested_profile=token.profile, satisfied_profile=satisfied,
                        token_digest=progress.token_digest,
                        evidence_digests=dict(progress.evidence_digests), released=released,
                        token_expires_at=token.expires_at, token_facts=progress.token_facts)

    def _open_token(self, text: str, progress: _Progress) -> LaunchToken:
        try:
            progress.token_digest = token_digest(text)
            # Opened without the expiry check so that an expired token's receipt can
            # still name its profile and image; the expiry is checked just below.
            token = open_token(text, self._token_keys, now=-1.0)
        except UnknownTokenKey as exc:
            raise Refusal("token_key_unknown", str(exc)) from None
        except TokenExpired as exc:  # not raised with now=-1; kept for safety
            raise Refusal("token_expired", str(exc)) from None
        except TokenError as exc:
            raise Refusal("token_malformed", str(exc)) from None
        progress.token_facts = token_facts(text, token, progress.token_digest)
        now = self._clock()
        if token.expires_at <= now:
            raise Refusal("token_expired", f"token expired at {token.expires_at} "
                                           f"(now {int(now)})")
        progress.requested_profile = token.profile
        progress.token_expires_at = token.expires_at
        progress.evidence_digests["token"] = progress.token_digest.hex()
        return token

    def inspect_token(self, text: str) -> tuple[bytes | None, str | None, TokenFacts | None]:
        """(digest, profile, receipt facts) of a token, for refusals made before verifying.

        Never raises: a token that does not open gives what is known (maybe nothing).
        """
        progress = _Progress(evidence_digests={})
        try:
            token = self._open_token(text, progress)
        except Refusal:
            return progress.token_digest, None, progress.token_facts
        return progress.token_digest, token.profile, progress.token_facts

    def _check_selection(self, selection: PCRSelection) -> None:
        offered = {alg: set(pcrs) for alg, pcrs in selection}
        for alg, pcrs in self._required_pcrs:
            missing = sorted(set(pcrs) - offered.get(alg, set()))
            if missing:
                raise Refusal("bind_key_policy", f"the bind key policy selection {selection} "
                                                 f"does not cover required PCRs "
                                                 f"{alg.bank_name}:{','.join(map(str, missing))}")

    def _replayed(self, key: tuple, data: bytes, selection: PCRSelection) -> _Replayed:
        """The log's replay under ``selection`` (cached by log digest and selection)."""
        return _cached_outcome(self._cache.replays, key,
                               lambda: _replay(_parse_log(data), selection))

    def _judged(self, log_key: tuple, requested: str, replayed: _Replayed) -> str:
        """The satisfied profile (cached by log, selection, profile set and request)."""
        key = (*log_key, profile_set_fingerprint(self._profiles), requested)
        return _cached_outcome(self._cache.verdicts, key,
                               lambda: self._judge(requested, replayed))

    def _judge(self, requested: str, replayed: _Replayed) -> str:
        if requested not in self._profiles:
            raise Refusal("profile_unknown", f"the token requests security profile "
                                             f"{requested!r}, which this TTP does not define")
        try:
            verdict, satisfied = evaluate_for_request(
                self._profiles, requested, replayed.view, replayed.proven)
        except UnknownProfile as exc:
            raise Refusal("profile_unknown", str(exc)) from None
        if satisfied is None:
            raise Refusal("profile_policy", f"host does not meet profile {requested!r}: "
                                            f"{verdict.summary()}")
        return satisfied


def evidence_digests(request: AttestationRequest) -> dict[str, str]:
    """SHA-256 hex of each piece of evidence, for the audit record."""
    items = {
        "ak_certificate": request.ak_certificate_pem,
        "bind_key_public": request.bind_key_public,
        "certify_info": request.certify_info,
        "certify_signature": request.certify_signature,
        "event_log": request.event_log,
    }
    return {name: hashlib.sha256(data).hexdigest() for name, data in items.items()}


def _parse_bind_key(data: bytes) -> PublicArea:
    try:
        return parse_public(data, tpm2b=True)
    except EvidenceError as exc:
        raise Refusal("bind_key_name", f"bind_key_public is not a TPM2B_PUBLIC: {exc}") from None


def _check_certify(request: AttestationRequest, ak_public: PublicArea,
                   bind_key: PublicArea) -> None:
    """A restricted signing AK, its signature (verified once), extraData binding, the Name."""
    if ak_public.object_attributes & AK_REQUIRED_ATTRIBUTES != AK_REQUIRED_ATTRIBUTES:
        raise Refusal("certify_signature", f"the host's AK {ak_public.name.hex()} is not a "
                                           "restricted signing key, so its signatures do not "
                                           "prove TPM origin")
    try:
        signature = parse_signature(request.certify_signature)
        verify_signature(ak_public, request.certify_info, signature)
        attest = parse_attest(request.certify_info, tpm2b=False)
    except EvidenceError as exc:
        raise Refusal("certify_signature", f"certify evidence does not verify with the "
                                           f"host's AK: {exc}") from None
    if attest.type != AttestType.CERTIFY:
        raise Refusal("certify_signature", f"the signed structure is a {attest.type.name} "
                                           "attestation, not a certification")
    expected = certify_qualifying_data(request.token, bind_key.name, request.launch_id)
    if not hmac.compare_digest(attest.extra_data, expected):
        raise Refusal("certify_binding", "certify extraData does not bind this token, bind "
                                         "key and launch id (evidence made for another "
                                         "request)")
    if not hmac.compare_digest(attest.attested.name, bind_key.name):
        raise Refusal("bind_key_name", f"the AK certified object {attest.attested.name.hex()}, "
                                       f"not the presented bind key {bind_key.name.hex()}")


def _check_attributes(bind_key: PublicArea) -> None:
    attrs = bind_key.object_attributes
    missing = [f.name for f in ObjectAttributes if f in REQUIRED_ATTRIBUTES and f not in attrs]
    present = [f.name for f in ObjectAttributes
               if f in FORBIDDEN_ATTRIBUTES and f in attrs and f.name != "SIGN"]
    if missing or present:
        problems = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"must not have {', '.join(present)}"] if present else [])
        raise Refusal("bind_key_attributes", f"bind key attributes {'; '.join(problems)}")
    if bind_key.name_alg not in POLICY_NAME_ALGS:
        raise Refusal("bind_key_attributes", f"bind key nameAlg {bind_key.name_alg.bank_name} "
                                             "is too weak (sha256 or stronger)")


def _cached_outcome(cache: LRUCache, key: tuple, compute: Callable[[], object]):
    """``compute()``'s result, or its Refusal raised again, remembered under ``key``."""
    cached = cache.get(key)
    if cached is None:
        try:
            cached = compute()
        except Refusal as refusal:
            cached = (refusal.check, refusal.reason)
        cache.put(key, cached)
    if isinstance(cached, tuple):
        raise Refusal(*cached)
    return cached


def _parse_log(data: bytes) -> EventLog:
    try:
        return parse_event_log(data)
    except EvidenceError as exc:
        raise Refusal("event_log_malformed", str(exc)) from None


def _replay(log: EventLog, selection: PCRSelection) -> _Replayed:
    """The selected PCRs' values replayed from ``log``, and the part of it they prove."""
    absent = [alg.bank_name for alg, _ in selection if alg not in log.banks]
    if absent:
        raise Refusal("bind_key_policy", f"the event log has no {', '.join(absent)} bank, so "
                                         "the selected PCRs cannot be replayed")
    replayed = replay(log, banks=[alg for alg, _ in selection])
    values = with_initial_values(selection, replayed)
    proven = {alg: {pcr: values[alg][pcr] for pcr in pcrs} for alg, pcrs in selection}
    return _Replayed(proven=proven, view=proven_view(log, selection))


def _check_policy(bind_key: PublicArea, selection: PCRSelection, replayed: _Replayed) -> None:
    """authPolicy must be PolicyPCR over the values replayed from the log."""
    expected = replayed.policy_digests.get(bind_key.name_alg)
    if expected is None:
        try:
            expected = policy_pcr_digest(selection, replayed.proven,
                                         policy_alg=bind_key.name_alg)
        except EvidenceError as exc:
            raise Refusal("bind_key_policy", str(exc)) from None
        replayed.policy_digests[bind_key.name_alg] = expected
    if not hmac.compare_digest(bind_key.auth_policy, expected):
        raise Refusal("bind_key_policy", f"bind key authPolicy {bind_key.auth_policy.hex()} is "
                                         f"not PolicyPCR({selection}) over the values replayed "
                                         f"from the event log ({expected.hex()}): the key is "
                                         "not locked to the boot state the log describes")


def proven_view(log: EventLog, selection: PCRSelection) -> EventLog:
    """The part of ``log`` the bind key's PCR policy proves.

    Only events extended into selected PCRs, with only the digests of the
    selected banks, are kept: the rest of the log is unproven host input.
    """
    selected = {alg: frozenset(pcrs) for alg, pcrs in selection}
    events = []
    for event in log.events:
        if int(event.event_type) == EV_NO_ACTION:
            continue
        digests = {alg: digest for alg, digest in event.digests.items()
                   if event.pcr in selected.get(alg, ())}
        if digests:
            events.append(Event(index=event.index, offset=event.offset, pcr=event.pcr,
                                event_type=event.event_type, digests=digests, data=event.data))
    return dataclasses.replace(log, events=tuple(events),
                               banks=tuple(a for a in log.banks if a in selected))


def _release(bind_key: PublicArea, token: LaunchToken, launch_id: str) -> bytes:
    secrets = ReleasedSecrets(token.nonce, token.image_digest, token.image_key)
    try:
        return seal_to_bind_key(bind_key.public_key(), secrets,
                                aad=release_aad(launch_id, bind_key.name))
    except (SealingError, EvidenceError) as exc:
        raise Refusal("bind_key_attributes", f"cannot encrypt to this bind key: {exc}") from None
