"""Draft a profile document from a known-good host's boot evidence."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from trusted_launch.evidence.algorithms import HashAlg
from trusted_launch.evidence.eventlog import EventLog, secure_boot_enabled
from trusted_launch.policy.evaluate import EV_NO_ACTION, PcrValues
from trusted_launch.policy.profile import load_profile


def draft_profile(name: str, level: int, event_log: EventLog, pcrs: PcrValues, *,
                  pcr_indexes: Iterable[int] = range(8),
                  banks: Iterable[HashAlg] | None = None,
                  description: str | None = None) -> dict[str, Any]:
    """A reviewable profile document that the observed host passes.

    It pins the observed values of ``pcr_indexes``, allowlists the digests
    of every event extended into them and requires Secure Boot if the log
    shows it enabled. ``banks`` defaults to sha256 when present, else every
    bank in ``pcrs``. The result is validated with :func:`load_profile`.
    """
    indexes = sorted(set(pcr_indexes))
    chosen = _choose_banks(pcrs, banks)
    doc: dict[str, Any] = {
        "name": name,
        "level": level,
        "description": description if description is not None else (
            f"Drafted from a known-good host's event log ({len(event_log.events)} events, "
            f"PCRs {','.join(map(str, indexes))}); review before use."),
        "require_secure_boot": secure_boot_enabled(event_log) is True,
        "pcrs": {alg.bank_name: _observed_values(pcrs.get(alg, {}), indexes)
                 for alg in chosen},
        "event_digests": {alg.bank_name: _observed_events(event_log, alg, indexes)
                          for alg in chosen},
    }
    load_profile(doc)
    return doc


def _choose_banks(pcrs: PcrValues, banks: Iterable[HashAlg] | None) -> list[HashAlg]:
    if banks is not None:
        return sorted(set(banks))
    if HashAlg.SHA256 in pcrs:
        return [HashAlg.SHA256]
    return sorted(pcrs)


def _observed_values(bank: dict[int, bytes] | Any, indexes: list[int]) -> dict[str, list[str]]:
    return {str(pcr): [bank[pcr].hex()] for pcr in indexes if pcr in bank}


def _observed_events(log: EventLog, alg: HashAlg, indexes: list[int]) -> dict[str, list[str]]:
    wanted = set(indexes)
    seen: dict[int, set[str]] = {}
    for event in log.events:
        if int(event.event_type) == EV_NO_ACTION or event.pcr not in wanted:
            continue
        digest = event.digests.get(alg)
        if digest is not None:
            seen.setdefault(event.pcr, set()).add(digest.hex())
    return {str(pcr): sorted(seen[pcr]) for pcr in sorted(seen)}
