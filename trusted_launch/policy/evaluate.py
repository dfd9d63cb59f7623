"""Judge a host's boot evidence against a security profile (step 10).

``evaluate`` is pure: it takes an already parsed firmware event log and the
PCR values that the caller has proven (replayed from that log and bound to
the TPM by a PolicyPCR key or a quote), and returns every violation found.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from trusted_launch.evidence.algorithms import HashAlg
from trusted_launch.evidence.eventlog import (
    EFI_GLOBAL_VARIABLE,
    EfiVariable,
    Event,
    EventLog,
    secure_boot_enabled,
)
from trusted_launch.policy.profile import ImaPolicy, SecurityProfile, event_type_name
from trusted_launch.policy.profiles import ProfileSet

EV_NO_ACTION = 0x3
EV_EFI_VARIABLE_DRIVER_CONFIG = 0x80000001
MAX_FINDINGS = 100
PcrValues = Mapping[HashAlg, Mapping[int, bytes]]


class ImaMeasurement(Protocol):
    """What evaluate needs of an IMA entry (``trusted_launch.evidence.ima.ImaEntry``)."""

    path: str
    file_digest: bytes


@dataclass(frozen=True)
class Finding:
    """One violation: a stable check name and a human-readable reason."""

    check: str
    reason: str


@dataclass(frozen=True)
class Verdict:
    """Outcome of judging evidence against one profile."""

    passed: bool
    findings: tuple[Finding, ...]
    profile: str | None = None

    def summary(self, limit: int = 3) -> str:
        """The first ``limit`` reasons, joined for a one-line refusal."""
        if self.passed:
            return "passed"
        reasons = [f.reason for f in self.findings[:limit]]
        more = len(self.findings) - limit
        if more > 0:
            reasons.append(f"and {more} more finding(s)")
        return "; ".join(reasons)


class _Findings:
    """Collects findings, bounded so hostile logs cannot blow up the verdict."""

    def __init__(self) -> None:
        self.items: list[Finding] = []
        self.dropped = 0

    def add(self, check: str, reason: str) -> None:
        if len(self.items) < MAX_FINDINGS:
            self.items.append(Finding(check, reason))
        else:
            self.dropped += 1

    def verdict(self, profile: str) -> Verdict:
        items = list(self.items)
        if self.dropped:
            items.append(Finding("findings_truncated",
                                 f"{self.dropped} further finding(s) not listed"))
        return Verdict(passed=not items, findings=tuple(items), profile=profile)


def evaluate(profile: SecurityProfile, event_log: EventLog, pcrs: PcrValues, *,
             ima_measurements: Sequence[ImaMeasurement] | None = None) -> Verdict:
    """Check ``event_log`` and the proven ``pcrs`` against ``profile``.

    ``ima_measurements`` are IMA entries already verified against a fresh
    quote; a profile with an ``ima`` section fails without them.
    """
    findings = _Findings()
    _check_secure_boot(profile, event_log, findings)
    _check_pcr_values(profile, pcrs, findings)
    _check_events(profile, event_log, findings)
    if profile.ima is not None:
        _check_ima(profile.ima, ima_measurements, findings)
    return findings.verdict(profile.name)


def evaluate_for_request(profiles: ProfileSet, requested_name: str, event_log: EventLog,
                         pcrs: PcrValues, *,
                         ima_measurements: Sequence[ImaMeasurement] | None = None,
                         ) -> tuple[Verdict, str | None]:
    """Judge a request for ``requested_name``; a stricter profile also satisfies it.

    Returns the verdict of the strictest profile the host passes and its
    name, or the requested profile's (failed) verdict and ``None``.
    Raises :class:`UnknownProfile` for a name the set does not hold.
    """
    candidates = profiles.at_least(requested_name)
    requested_verdict: Verdict | None = None
    for profile in reversed(candidates):
        verdict = evaluate(profile, event_log, pcrs, ima_measurements=ima_measurements)
        if verdict.passed:
            return verdict, profile.name
        if profile.name == requested_name:
            requested_verdict = verdict
    assert requested_verdict is not None
    return requested_verdict, None


def _check_secure_boot(profile: SecurityProfile, log: EventLog, findings: _Findings) -> None:
    if not profile.require_secure_boot:
        return
    state = secure_boot_enabled(log)
    if state is None:
        findings.add("secure_boot", "the event log does not record the SecureBoot variable; "
                                    "the profile requires Secure Boot")
    elif not state:
        findings.add("secure_boot", "Secure Boot is disabled according to the event log; "
                                    "the profile requires it")
    else:
        _check_secure_boot_data(log, findings)


def _check_secure_boot_data(log: EventLog, findings: _Findings) -> None:
    """The SecureBoot variable's data must hash to its measured digests.

    Replay proves the digests, not the data; a host could otherwise show
    SecureBoot=1 data next to the digest of SecureBoot=0.
    """
    for event in log.events:
        if not _is_secure_boot_variable(event):
            continue
        for alg, digest in event.digests.items():
            if alg.digest(event.data) != digest:
                findings.add("secure_boot", f"PCR {event.pcr} ({alg.bank_name}) event "
                                            f"{event.index} SecureBoot variable data does not "
                                            "match its measured digest")


def _is_secure_boot_variable(event: Event) -> bool:
    if int(event.event_type) != EV_EFI_VARIABLE_DRIVER_CONFIG:
        return False  # checked first: decoding every event's data is the costly part
    decoded = event.decoded
    return (isinstance(decoded, EfiVariable) and decoded.guid == EFI_GLOBAL_VARIABLE
            and decoded.name == "SecureBoot")


def _check_pcr_values(profile: SecurityProfile, pcrs: PcrValues, findings: _Findings) -> None:
    for alg, per_pcr in profile.pcrs.items():
        bank = pcrs.get(alg, {})
        for pcr, allowed in sorted(per_pcr.items()):
            value = bank.get(pcr)
            if value is None:
                findings.add("pcr_value", f"PCR {pcr} ({alg.bank_name}) has no value in the "
                                          "evidence; the profile pins it")
            elif value not in allowed:
                findings.add("pcr_value", f"PCR {pcr} ({alg.bank_name}) value {value.hex()} "
                                          f"is not one of the profile's {len(allowed)} "
                                          "allowed value(s)")


def _check_events(profile: SecurityProfile, log: EventLog, findings: _Findings) -> None:
    allowlists = profile.event_digests
    forbidden = profile.forbid_event_types
    for event in log.events:
        event_type = int(event.event_type)
        if event_type in forbidden:
            findings.add("forbidden_event", f"PCR {event.pcr} event {event.index} "
                                            f"{event_type_name(event_type)} is forbidden by "
                                            "the profile")
        if event_type == EV_NO_ACTION:
            continue
        for alg, per_pcr in allowlists.items():
            allowed = per_pcr.get(event.pcr)
            if allowed is None:
                continue
            _check_event_digest(event, alg, allowed, findings)


def _check_event_digest(event: Event, alg: HashAlg, allowed: frozenset[bytes],
                        findings: _Findings) -> None:
    digest = event.digests.get(alg)
    where = (f"PCR {event.pcr} ({alg.bank_name}) event {event.index} "
             f"{event_type_name(int(event.event_type))}")
    if digest is None:
        findings.add("event_digest", f"{where} has no {alg.bank_name} digest; the profile "
                                     "allowlists that bank")
    elif digest not in allowed:
        findings.add("event_digest", f"{where} digest {digest.hex()} is not in the "
                                     "profile's allowlist")


def _check_ima(policy: ImaPolicy, entries: Iterable[ImaMeasurement] | None,
               findings: _Findings) -> None:
    if entries is None:
        findings.add("ima", "the profile requires an IMA measurement list verified by a "
                            "fresh quote; none was presented")
        return
    for index, entry in enumerate(entries):
        if entry.path == "boot_aggregate" and entry.path not in policy.allowlist:
            continue
        allowed = policy.allowlist.get(entry.path)
        if allowed is None:
            findings.add("ima", f"IMA entry {index} file {entry.path!r} is not in the "
                                "profile's allowlist")
        elif entry.file_digest not in allowed:
            findings.add("ima", f"IMA entry {index} file {entry.path!r} digest "
                                f"{entry.file_digest.hex()} is not allowed")
