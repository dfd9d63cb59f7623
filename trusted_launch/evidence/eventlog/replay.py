"""PCR replay of a parsed event log and the facts derived from it."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping

from trusted_launch.evidence.algorithms import HashAlg
from trusted_launch.evidence.eventlog.events import EventLog
from trusted_launch.evidence.eventlog.parser import parse_event_log
from trusted_launch.evidence.eventlog.records import EFI_GLOBAL_VARIABLE, EfiVariable, EventType

_CONSTRUCTORS = {
    HashAlg.SHA1: hashlib.sha1,
    HashAlg.SHA256: hashlib.sha256,
    HashAlg.SHA384: hashlib.sha384,
    HashAlg.SHA512: hashlib.sha512,
}
_NO_ACTION = EventType.EV_NO_ACTION

PCRValues = dict[HashAlg, dict[int, bytes]]


def _hasher(alg: HashAlg):
    return _CONSTRUCTORS.get(alg) or alg.new


def _initial(alg: HashAlg, pcr: int, locality: int | None) -> bytes:
    size = alg.digest_size
    if pcr == 0 and locality is not None:
        return bytes(size - 1) + bytes([locality])
    return bytes(size)


def replay(log: EventLog, banks: Iterable[HashAlg] | None = None,
           pcrs: Iterable[int] | None = None) -> PCRValues:
    """PCR values after extending every measured event (EV_NO_ACTION skipped).

    The result holds, per bank, only the PCRs some event extended, and only
    banks with at least one such PCR. A bank the log does not carry is absent.
    """
    wanted = None if pcrs is None else frozenset(pcrs)
    measured = [(event.pcr, event.digests) for event in log.events
                if event.event_type != _NO_ACTION and (wanted is None or event.pcr in wanted)]
    selected = log.banks if banks is None else tuple(b for b in banks if b in log.banks)
    result: PCRValues = {}
    for alg in selected:
        values = _replay_bank(measured, alg, log.startup_locality)
        if values:
            result[alg] = values
    return result


def _replay_bank(measured: list[tuple[int, Mapping[HashAlg, bytes]]], alg: HashAlg,
                 locality: int | None) -> dict[int, bytes]:
    new = _hasher(alg)
    values: dict[int, bytes] = {}
    get = values.get
    for pcr, digests in measured:
        old = get(pcr)
        if old is None:
            old = _initial(alg, pcr, locality)
        values[pcr] = new(old + digests[alg]).digest()
    return dict(sorted(values.items()))


def replay_event_log(data: bytes) -> PCRValues:
    """Parse ``data`` and replay every bank it carries."""
    return replay(parse_event_log(data))


def secure_boot_enabled(log: EventLog) -> bool | None:
    """The SecureBoot variable as measured (True only if every measurement says 1).

    None when the log has no EV_EFI_VARIABLE_DRIVER_CONFIG "SecureBoot" event.
    """
    states = [
        event.decoded.data == b"\x01"
        for event in log.events
        if event.event_type == EventType.EV_EFI_VARIABLE_DRIVER_CONFIG
        and isinstance(event.decoded, EfiVariable)
        and event.decoded.guid == EFI_GLOBAL_VARIABLE
        and event.decoded.name == "SecureBoot"
    ]
    if not states:
        return None
    return all(states)


def pcrs_to_json(pcrs: PCRValues) -> dict[str, dict[str, str]]:
    """``{"sha256": {"0": "hex", ...}}`` with banks and PCRs in numeric order."""
    return {
        alg.bank_name: {str(pcr): value.hex() for pcr, value in sorted(bank.items())}
        for alg, bank in sorted(pcrs.items())
    }
