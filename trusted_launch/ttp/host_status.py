"""Continuous host attestation at the TTP: fresh nonces, periodic quotes, host status.

``POST /v1/hosts/{host}/challenges`` hands an enrolled host a short-lived,
single-use nonce. ``POST /v1/hosts/{host}/attestations`` takes a TPM2_Quote
over that nonce (signed by the host's enrolled AK), the firmware event log
and, when PCR 10 is quoted, the part of the IMA list the TTP has not seen
yet. The TTP replays the log (and the IMA list incrementally, from the
replay state it keeps per host), requires the quoted PCR digest to equal the
replay, judges the host against every security profile and stores the
strongest one it meets (or none) with the reason.

Evidence that is not the host's (no fresh nonce, not signed by its AK) is
refused with 403 and changes nothing. Evidence the host's AK signed but
that does not add up (PCRs differ from the logs, a profile no longer met)
is the host's own statement: it becomes the host's status. A change of
status is announced on the message bus (``trusted_launch.host.status``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from oslo_log import log as logging

from trusted_launch.evidence.errors import EvidenceError
from trusted_launch.evidence.eventlog import EventLog, parse_event_log, replay
from trusted_launch.evidence.ima import (
    DEFAULT_BANKS,
    IMA_PCR,
    ImaEntry,
    ImaReplayState,
    parse_ima_list,
    replay_ima_list,
)
from trusted_launch.evidence.tpm2 import (
    Attest,
    AttestType,
    PCRSelection,
    PublicArea,
    QuoteInfo,
    Signature,
    parse_attest,
    parse_public,
    parse_signature,
    pcr_digest,
    verify_signature,
    with_initial_values,
)
from trusted_launch.policy import ProfileSet, SecurityProfile, Verdict, evaluate
from trusted_launch.ttp.db.api import TTPDatabase
from trusted_launch.ttp.enrollment import check_host_name
from trusted_launch.ttp.errors import BadRequest, Refused, unknown_field_check
from trusted_launch.ttp.host_status_store import (
    HostStatusStore,
    NonceState,
    StoredHostStatus,
    iso_utc,
)
from trusted_launch.ttp.requests import RequestInvalid
from trusted_launch.ttp.verifier import proven_view

LOG = logging.getLogger(__name__)

NONCE_SIZE = 32
MAX_QUOTE = 4096
MAX_EVENT_LOG = 4 * 1024 * 1024
MAX_IMA_FRAGMENT = 4 * 1024 * 1024
FIELDS = frozenset({"nonce", "quote", "signature", "event_log", "ima_log", "ima_offset"})
PcrValues = dict[Any, dict[int, bytes]]


class StatusDrop(Exception):
    """Internal: the host's own signed evidence fails a check; it becomes its status."""

    def __init__(self, check: str, reason: str) -> None:
        super().__init__(f"{check}: {reason}")
        self.check, self.reason = check, reason


@dataclass(frozen=True)
class HostQuoteRequest:
    """The validated body of ``POST /v1/hosts/{host}/attestations``."""

    nonce: bytes = field(repr=False)
    quote: bytes = field(repr=False)
    signature: bytes = field(repr=False)
    event_log: bytes = field(repr=False)
    ima_log: bytes | None = field(default=None, repr=False)
    ima_offset: int = 0

    @classmethod
    def from_json(cls, body: object) -> HostQuoteRequest:
        """Validate a decoded JSON body; :class:`RequestInvalid` names the bad field."""
        if not isinstance(body, Mapping):
            raise RequestInvalid("body", "the request body must be a JSON object")
        unknown = sorted(str(name) for name in body if name not in FIELDS)
        if unknown:
            raise RequestInvalid(*unknown_field_check(unknown[0]))
        nonce = _base64(body, "nonce", NONCE_SIZE)
        if len(nonce) != NONCE_SIZE:
            raise RequestInvalid("nonce", f"must decode to {NONCE_SIZE} bytes")
        ima_log = (None if body.get("ima_log") is None
                   else _base64(body, "ima_log", MAX_IMA_FRAGMENT, allow_empty=True))
        return cls(nonce=nonce, quote=_base64(body, "quote", MAX_QUOTE),
                   signature=_base64(body, "signature", MAX_QUOTE),
                   event_log=_base64(body, "event_log", MAX_EVENT_LOG),
                   ima_log=ima_log, ima_offset=_offset(body))


def _base64(body: Mapping, name: str, limit: int, *, allow_empty: bool = False) -> bytes:
    value = body.get(name)
    if not isinstance(value, str):
        raise RequestInvalid(name, "required base64 string is missing")
    if len(value) > 4 * ((limit + 2) // 3):
        raise RequestInvalid(name, f"decodes to more than {limit} bytes")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise RequestInvalid(name, "is not strict standard base64") from None
    if not data and not allow_empty:
        raise RequestInvalid(name, "is empty")
    return data


def _offset(body: Mapping) -> int:
    value = body.get("ima_offset", 0)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**53:
        raise RequestInvalid("ima_offset", "must be a non-negative integer")
    return value


def nonce_digest(nonce: bytes) -> str:
    """What the database keeps of a nonce."""
    return hashlib.sha256(b"trusted-launch/v1 host nonce" + nonce).hexdigest()


@dataclass(frozen=True)
class ImaProgress:
    """The IMA list after this round: new entries, absolute state and next offset."""

    state: ImaReplayState
    offset: int
    entries: list[ImaEntry]
    restarted: bool


@dataclass(frozen=True)
class Judgement:
    """The strongest profile met (or None), why not stronger, sticky IMA failures."""

    profile: str | None
    check: str | None
    reason: str | None
    ima_failed: dict[str, str]


class HostStatusService:
    """Nonces, periodic quotes and the status of each host."""

    def __init__(self, db: TTPDatabase, profiles: Callable[[], ProfileSet],
                 required_pcrs: PCRSelection, *, challenge_ttl: float = 60.0,
                 notifier: Any = None, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.store = HostStatusStore(db)
        self.profiles = profiles
        self.required_pcrs = required_pcrs
        self.challenge_ttl = challenge_ttl
        self.notifier = notifier
        self.clock = clock

    # challenges -------------------------------------------------------------

    def challenge(self, host: str) -> dict:
        """A fresh nonce for ``host`` (201 body)."""
        self._ak_public(check_host_name(host))
        nonce = secrets.token_bytes(NONCE_SIZE)
        now = self.clock()
        expires_at = now + self.challenge_ttl
        self.store.add_challenge(host, nonce_digest(nonce), expires_at, now)
        return {"host": host, "nonce": base64.b64encode(nonce).decode(),
                "expires_at": expires_at}

    # attestations -----------------------------------------------------------

    def attest(self, host: str, body: object) -> dict:
        """Judge one periodic quote; the host's new status (200 body) or Refused/BadRequest."""
        check_host_name(host)
        request = HostQuoteRequest.from_json(body)
        ak_public = self._ak_public(host)
        self._consume_nonce(host, request.nonce)
        attest, signature = verified_quote(ak_public, request)
        stored = self.store.get(host)
        try:
            new = self._judged_status(host, request, attest, signature, stored)
        except StatusDrop as drop:
            new = self._dropped_status(host, stored, drop)
        previous = self.store.save(new)
        self._announce(new, previous)
        return self._answer(new, previous)

    def statuses(self) -> dict:
        """Every host's current status (GET /v1/hosts?status=1)."""
        return {"hosts": [status.to_json() for status in self.store.all()],
                "now": self.clock()}

    def last_attested_at(self, host: str) -> str | None:
        """ISO time of the host's latest accepted periodic quote, None if it never sent one."""
        stored = self.store.get(host)
        return None if stored is None else iso_utc(stored.checked_at)

    def _ak_public(self, host: str) -> PublicArea:
        row = self.db.host_ak(host)  # one autocommit SELECT, as on the launch path
        if row is None or row[0] != "active" or not row[1]:
            raise Refused("host_unknown", f"host {host!r} is not enrolled and active")
        return parse_public(base64.b64decode(row[1]), tpm2b=True)

    def _consume_nonce(self, host: str, nonce: bytes) -> None:
        state = self.store.consume_challenge(host, nonce_digest(nonce), self.clock())
        if state is NonceState.UNKNOWN:
            raise Refused("nonce_unknown", "the nonce was not issued to this host or was "
                                           "already used; ask for a new challenge")
        if state is NonceState.EXPIRED:
            raise Refused("nonce_expired", f"the nonce is older than {self.challenge_ttl:g} s; "
                                           "ask for a new challenge")

    def _judged_status(self, host: str, request: HostQuoteRequest, attest: Attest,
                       signature: Signature, stored: StoredHostStatus | None
                       ) -> StoredHostStatus:
        info = attest.attested
        assert isinstance(info, QuoteInfo)
        selection = info.pcr_select
        self._check_coverage(selection)
        static, ima_banks = split_ima(selection)
        log = parse_log(request.event_log)
        values = replayed_values(log, static)
        ima = ima_progress(request, stored, ima_banks)
        if ima is not None:
            for bank in ima_banks:
                values.setdefault(bank, {})[IMA_PCR] = ima.state.pcrs[bank]
        check_quoted_digest(info, selection, values, signature)
        proven = {alg: {pcr: values[alg][pcr] for pcr in pcrs} for alg, pcrs in static.banks}
        carried = {} if ima is None or ima.restarted or stored is None else stored.ima_failed
        judgement = judge(self.profiles(), proven_view(log, static), proven,
                          None if ima is None else ima.entries, carried)
        return StoredHostStatus(
            host=host, profile=judgement.profile, check=judgement.check,
            reason=judgement.reason, checked_at=self.clock(),
            ima_state=None if ima is None else ima.state.to_json(),
            ima_offset=0 if ima is None else ima.offset, ima_failed=judgement.ima_failed)

    def _check_coverage(self, selection: PCRSelection) -> None:
        offered = {alg: set(pcrs) for alg, pcrs in selection.banks}
        for alg, pcrs in self.required_pcrs.banks:
            missing = sorted(set(pcrs) - offered.get(alg, set()))
            if missing:
                raise StatusDrop("quote_selection", f"the quote selects {selection}, not the "
                                                    f"required {alg.bank_name}:"
                                                    f"{','.join(map(str, missing))}")

    def _dropped_status(self, host: str, stored: StoredHostStatus | None,
                        drop: StatusDrop) -> StoredHostStatus:
        """Untrusted now; the IMA replay state stays where the last good round left it."""
        return StoredHostStatus(
            host=host, profile=None, check=drop.check, reason=drop.reason,
            checked_at=self.clock(), ima_state=None if stored is None else stored.ima_state,
            ima_offset=0 if stored is None else stored.ima_offset,
            ima_failed={} if stored is None else stored.ima_failed)

    def _announce(self, new: StoredHostStatus, previous: StoredHostStatus | None) -> None:
        before = None if previous is None else previous.profile
        if previous is not None and before == new.profile:
            return
        dropped = new.profile is None or _weaker(new.profile, before, self.profiles())
        (LOG.warning if dropped else LOG.info)(
            "host %s status: %s (was %s): %s", new.host, new.profile or "untrusted",
            before or "untrusted", new.reason or "meets every profile")
        if self.notifier is not None:
            self.notifier.host_status_changed(new.host, new.profile, before, new.reason or "",
                                              new.checked_at, dropped=dropped)

    @staticmethod
    def _answer(new: StoredHostStatus, previous: StoredHostStatus | None) -> dict:
        ima_count = None if new.ima_state is None else new.ima_state.get("count")
        return {**new.to_json(), "previous_profile": None if previous is None
                else previous.profile, "ima_offset": new.ima_offset, "ima_count": ima_count}


def _weaker(profile: str | None, than: str | None, profiles: ProfileSet) -> bool:
    level = {p.name: p.level for p in profiles}
    return level.get(profile or "", -1) < level.get(than or "", -1)


def verified_quote(ak_public: PublicArea, request: HostQuoteRequest
                   ) -> tuple[Attest, Signature]:
    """The quote, signed by the host's AK over the presented nonce; else Refused."""
    try:
        signature = parse_signature(request.signature)
        verify_signature(ak_public, request.quote, signature)
        attest = parse_attest(request.quote)
    except EvidenceError as exc:
        raise Refused("quote_signature", f"the quote does not verify with the host's "
                                         f"enrolled AK: {exc}") from None
    if attest.type is not AttestType.QUOTE:
        raise Refused("quote_signature", f"the signed structure is a {attest.type.name} "
                                         "attestation, not a quote")
    if not hmac.compare_digest(attest.extra_data, request.nonce):
        raise Refused("quote_nonce", "the quote's extraData is not the presented nonce")
    return attest, signature


def split_ima(selection: PCRSelection) -> tuple[PCRSelection, list]:
    """(the selection without PCR 10, the banks in which PCR 10 is quoted)."""
    static = {alg: [pcr for pcr in pcrs if pcr != IMA_PCR] for alg, pcrs in selection.banks}
    ima_banks = [alg for alg, pcrs in selection.banks if IMA_PCR in pcrs]
    return PCRSelection.of({alg: pcrs for alg, pcrs in static.items() if pcrs}), ima_banks


def parse_log(data: bytes) -> EventLog:
    try:
        return parse_event_log(data)
    except EvidenceError as exc:
        raise StatusDrop("event_log_malformed", str(exc)) from None


def replayed_values(log: EventLog, static: PCRSelection) -> PcrValues:
    """The selected static PCRs as the event log replays them."""
    absent = [alg.bank_name for alg, _ in static.banks if alg not in log.banks]
    if absent:
        raise StatusDrop("quote_pcrs", f"the event log has no {', '.join(absent)} bank, so "
                                       "the quoted PCRs cannot be replayed")
    replayed = replay(log, banks=[alg for alg, _ in static.banks])
    return with_initial_values(static, replayed)


def ima_progress(request: HostQuoteRequest, stored: StoredHostStatus | None,
                 ima_banks: list) -> ImaProgress | None:
    """Replay the new part of the IMA list from the stored state (PCR 10 quoted only)."""
    if not ima_banks:
        if request.ima_log:
            raise BadRequest("ima_log", "an IMA list needs a quote that covers PCR 10")
        return None
    unsupported = [alg.bank_name for alg in ima_banks if alg not in DEFAULT_BANKS]
    if unsupported:
        raise StatusDrop("ima_list", f"PCR 10 quoted in {', '.join(unsupported)}; IMA is "
                                     "replayed in sha1 and sha256")
    restarted = request.ima_offset == 0
    state = None if restarted else _resume_state(request, stored)
    data = request.ima_log or b""
    try:
        new = replay_ima_list(data, DEFAULT_BANKS, state)
        entries = parse_ima_list(data) if data else []
    except EvidenceError as exc:
        raise StatusDrop("ima_list", str(exc)) from None
    if state is not None:
        entries = entries[1:]  # the first is the last one replayed before
    relative = new.last_entry_offset or 0
    offset = request.ima_offset + relative
    absolute = ImaReplayState(new.count, new.pcrs, offset if new.count else None,
                              new.last_template_hash)
    return ImaProgress(absolute, offset, entries, restarted)


def _resume_state(request: HostQuoteRequest, stored: StoredHostStatus | None
                  ) -> ImaReplayState:
    if stored is None or stored.ima_state is None or stored.ima_offset != request.ima_offset:
        expected = 0 if stored is None else stored.ima_offset
        raise StatusDrop("ima_continuity", f"the IMA list part starts at byte "
                                           f"{request.ima_offset}; the TTP continues from "
                                           f"byte {expected} (or 0 to replay it all)")
    try:
        state = ImaReplayState.from_json(stored.ima_state)
    except EvidenceError as exc:
        raise StatusDrop("ima_continuity", str(exc)) from None
    # The part the host sends starts with the state's last entry (offset 0 in it).
    return ImaReplayState(state.count, state.pcrs, 0 if state.count else None,
                          state.last_template_hash)


def check_quoted_digest(info: QuoteInfo, selection: PCRSelection, values: PcrValues,
                        signature: Signature) -> None:
    try:
        expected = pcr_digest(selection, values, signature.hash_alg)
    except EvidenceError as exc:
        raise StatusDrop("quote_pcrs", str(exc)) from None
    if not hmac.compare_digest(info.pcr_digest, expected):
        raise StatusDrop("quote_pcrs", f"the quoted PCR digest over {selection} differs from "
                                       "the replay of the event log (and IMA list): the "
                                       "host is not in the state its logs describe")


def judge(profiles: ProfileSet, view: EventLog, proven: PcrValues,
          ima_entries: list[ImaEntry] | None, carried: Mapping[str, str]) -> Judgement:
    """Evaluate every profile; IMA failures stick until the list starts over."""
    ima_failed = dict(carried)
    if not len(profiles):
        return Judgement(None, "profile_unknown", "the TTP defines no security profile",
                         ima_failed)
    verdicts: list[tuple[SecurityProfile, Verdict]] = []
    for profile in profiles:
        verdict = evaluate(profile, view, proven, ima_measurements=ima_entries)
        ima_findings = [f.reason for f in verdict.findings if f.check == "ima"]
        if profile.ima is not None and ima_entries is not None and ima_findings \
                and profile.name not in ima_failed:
            ima_failed[profile.name] = ima_findings[0]
        verdicts.append((profile, verdict))
    met = [p for p, v in verdicts if v.passed and p.name not in ima_failed]
    best = met[-1] if met else None
    stronger = [(p, v) for p, v in verdicts if best is None or p.level > best.level]
    if not stronger:
        return Judgement(best.name, None, None, ima_failed)
    profile, verdict = stronger[0]
    summary = ima_failed.get(profile.name) if verdict.passed else verdict.summary()
    check = "profile_policy" if best is None else "stronger_profile"
    prefix = "meets no profile" if best is None else f"meets {best.name}"
    return Judgement(None if best is None else best.name, check,
                     f"{prefix}; {profile.name}: {summary}", ima_failed)
