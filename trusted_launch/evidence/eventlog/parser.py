"""Framing of TCG PC Client firmware event logs (``binary_bios_measurements``).

Two formats: the crypto-agile log (first event a SHA1-format EV_NO_ACTION
"Spec ID Event03" header, then TCG_PCR_EVENT2 records with one digest per
algorithm listed in that header) and the legacy SHA1-only log
(TCG_PCClientPCREvent records throughout). Every count and size is checked
against the bytes that remain before anything is read or allocated.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from types import MappingProxyType

from trusted_launch.evidence.algorithms import HashAlg
from trusted_launch.evidence.errors import EventLogError, UnknownAlgorithmError
from trusted_launch.evidence.eventlog.decode import decode_no_action
from trusted_launch.evidence.eventlog.events import Event, EventLog
from trusted_launch.evidence.eventlog.records import EventType, SpecIdEvent, StartupLocality

MAX_PCR_INDEX = 30
NO_PCR = 0xFFFFFFFF  # Windows logs EV_NO_ACTION events against PCR -1
MAX_ALGORITHMS = 16
MAX_DIGEST_SIZE = 64
SPEC_ID_SIGNATURE = b"Spec ID Event03\0"

_LEGACY_HEADER = struct.Struct("<II20sI")
_AGILE_HEADER = struct.Struct("<III")
_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")
_SPEC_ID_FIXED = struct.Struct("<16sIBBBBI")
_ALG_ENTRY = struct.Struct("<HH")
_NO_ACTION = EventType.EV_NO_ACTION
_NO_UNKNOWN: MappingProxyType = MappingProxyType({})
_EVENT_TYPES = {int(member): member for member in EventType}
_KNOWN_IDS = frozenset(HashAlg.__members__.values())
_WHAT = "event log"


def _error(offset: int, problem: str) -> EventLogError:
    return EventLogError(_WHAT, offset, problem)


def _check_pcr(pcr: int, event_type: int, offset: int) -> None:
    if pcr > MAX_PCR_INDEX and not (pcr == NO_PCR and event_type == _NO_ACTION):
        raise _error(offset, f"PCR index {pcr} is out of range (at most {MAX_PCR_INDEX})")


def _data_end(length: int, size_offset: int, size: int) -> int:
    start = size_offset + 4
    if size > length - start:
        raise _error(size_offset, f"event size {size} runs past the end "
                                  f"({length - start} bytes left)")
    return start + size


def _read_legacy(data: bytes, offset: int) -> tuple[int, int, bytes, int, int]:
    """pcr, type, sha1 digest, data start, data end of a TCG_PCClientPCREvent."""
    if len(data) - offset < _LEGACY_HEADER.size:
        raise _error(offset, f"event header needs {_LEGACY_HEADER.size} bytes, "
                             f"only {len(data) - offset} left")
    pcr, event_type, digest, size = _LEGACY_HEADER.unpack_from(data, offset)
    _check_pcr(pcr, event_type, offset)
    start = offset + _LEGACY_HEADER.size
    return pcr, event_type, digest, start, _data_end(len(data), start - 4, size)


def _parse_spec_id(body: bytes, base: int) -> SpecIdEvent:
    """Decode TCG_EfiSpecIDEvent found at log offset ``base``."""
    if len(body) < _SPEC_ID_FIXED.size:
        raise _error(base, f"Spec ID event is {len(body)} bytes, needs at least "
                           f"{_SPEC_ID_FIXED.size}")
    _sig, platform, minor, major, errata, uintn, count = _SPEC_ID_FIXED.unpack_from(body)
    pos = _SPEC_ID_FIXED.size
    if count == 0 or count > MAX_ALGORITHMS or count * 4 > len(body) - pos:
        raise _error(base + pos - 4, f"Spec ID numberOfAlgorithms {count} is invalid "
                                     f"(must be 1..{MAX_ALGORITHMS} and fit in the event)")
    algorithms: list[tuple[int, int]] = []
    for _ in range(count):
        alg_id, size = _ALG_ENTRY.unpack_from(body, pos)
        _check_algorithm(alg_id, size, algorithms, base + pos)
        algorithms.append((alg_id, size))
        pos += 4
    if pos >= len(body) or body[pos] != len(body) - pos - 1:
        raise _error(base + pos, "Spec ID vendorInfoSize does not match the event size")
    return SpecIdEvent(platform, (major, minor, errata), uintn, tuple(algorithms),
                       bytes(body[pos + 1:]))


def _check_algorithm(alg_id: int, size: int, seen: list[tuple[int, int]], offset: int) -> None:
    if any(alg_id == other for other, _ in seen):
        raise _error(offset, f"Spec ID lists algorithm 0x{alg_id:04x} twice")
    if not 0 < size <= MAX_DIGEST_SIZE:
        raise _error(offset, f"Spec ID digest size {size} of algorithm 0x{alg_id:04x} "
                             f"is invalid")
    if alg_id in _KNOWN_IDS and HashAlg(alg_id).digest_size != size:
        alg = HashAlg(alg_id)
        raise _error(offset, f"Spec ID gives {alg.bank_name} a digest size of {size}, "
                             f"not {alg.digest_size}")


class _Events:
    """Collects events and the StartupLocality state while parsing."""

    __slots__ = ("events", "locality", "pcr0_extended")

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.locality: int | None = None
        self.pcr0_extended = False

    def no_action(self, offset: int, pcr: int, digests: Mapping[HashAlg, bytes], body: bytes,
                  unknown: Mapping[int, bytes]) -> None:
        decoded = decode_no_action(body)
        if type(decoded) is StartupLocality and pcr == 0:
            if self.locality is not None:
                raise _error(offset, "second StartupLocality event")
            if self.pcr0_extended:
                raise _error(offset, "StartupLocality event after PCR0 was extended")
            self.locality = decoded.locality
        self.events.append(Event(len(self.events), offset, pcr, _NO_ACTION, digests, body,
                                 unknown, decoded))


def parse_event_log(data: bytes) -> EventLog:
    """Parse a binary firmware event log; raise EventLogError when malformed."""
    data = bytes(data)
    if not data:
        raise _error(0, "empty event log")
    try:
        pcr, event_type, digest, start, end = _read_legacy(data, 0)
    except EventLogError as exc:
        raise _error(0, f"not a TCG event log: its first record is not a TCG_PCR_EVENT "
                        f"({exc.problem}); give the binary log, e.g. "
                        "/sys/kernel/security/tpm0/binary_bios_measurements") from None
    first = data[start:end]
    events = _Events()
    if event_type == _NO_ACTION and first.startswith(SPEC_ID_SIGNATURE):
        if pcr != 0:
            raise _error(0, f"Spec ID event is in PCR {pcr}, not PCR 0")
        if any(digest):
            raise _error(8, "Spec ID event digest is not zero")
        spec_id = _parse_spec_id(first, start)
        events.events.append(Event(0, 0, 0, _NO_ACTION, {HashAlg.SHA1: digest}, first,
                                   _NO_UNKNOWN, spec_id))
        banks = _parse_agile(data, end, spec_id, events)
        return EventLog(tuple(events.events), banks, False, spec_id, events.locality)
    _parse_legacy(data, 0, events)
    return EventLog(tuple(events.events), (HashAlg.SHA1,), True, None, events.locality)


def _parse_legacy(data: bytes, offset: int, events: _Events) -> None:
    sha1 = HashAlg.SHA1
    append = events.events.append
    while offset < len(data):
        pcr, event_type, digest, start, end = _read_legacy(data, offset)
        if event_type == _NO_ACTION:
            events.no_action(offset, pcr, {sha1: digest}, data[start:end], _NO_UNKNOWN)
        else:
            if pcr == 0:
                events.pcr0_extended = True
            append(Event(len(events.events), offset, pcr, _EVENT_TYPES.get(event_type, event_type),
                         {sha1: digest}, data[start:end], _NO_UNKNOWN))
        offset = end


class _AgileEvents:
    """Reads TCG_PCR_EVENT2 records of a log whose Spec ID event is known.

    Almost every event lists its digests in Spec ID order; one precompiled
    ``struct`` reads such an event's header, digests and size in one call.
    Anything else takes the checked path, which names the offending field.
    """

    def __init__(self, spec_id: SpecIdEvent) -> None:
        self.sizes = {alg_id: size for alg_id, size in spec_id.algorithms}
        self.algs = {alg_id: HashAlg(alg_id) for alg_id in self.sizes if alg_id in _KNOWN_IDS}
        self.ids = tuple(alg_id for alg_id, _ in spec_id.algorithms)
        self.keys = tuple(self.algs.get(alg_id) for alg_id in self.ids)
        layout = "".join(f"H{size}s" for _, size in spec_id.algorithms)
        fast = struct.Struct(f"<III{layout}I")
        self.fast_unpack = fast.unpack_from if None not in self.keys else None
        self.fast_size = fast.size

    def read(self, data: bytes, offset: int, length: int) -> tuple[int, int, dict, object, int]:
        """(pcr, type, digests, unknown digests, data start) of the event at ``offset``."""
        if self.fast_unpack is not None and length - offset >= self.fast_size:
            values = self.fast_unpack(data, offset)
            if values[2] == len(self.ids) and values[3:-1:2] == self.ids \
                    and values[0] <= MAX_PCR_INDEX:
                digests = dict(zip(self.keys, values[4:-1:2], strict=True))
                return values[0], values[1], digests, _NO_UNKNOWN, offset + self.fast_size - 4
        return self._read_checked(data, offset, length)

    def _read_checked(self, data: bytes, offset: int,
                      length: int) -> tuple[int, int, dict, object, int]:
        if length - offset < 12:
            raise _error(offset, f"event header needs 12 bytes, only {length - offset} left")
        pcr, event_type, count = _AGILE_HEADER.unpack_from(data, offset)
        _check_pcr(pcr, event_type, offset)
        if count != len(self.ids):
            raise _error(offset + 8, f"digest count {count} does not match the "
                                     f"{len(self.ids)} algorithms of the Spec ID event")
        pos = offset + 12
        digests: dict = {}
        unknown: dict = {}
        for _ in self.ids:
            pos = self._read_digest(data, pos, digests, unknown)
        return pcr, event_type, digests, (MappingProxyType(unknown) if unknown
                                          else _NO_UNKNOWN), pos

    def _read_digest(self, data: bytes, pos: int, digests: dict, unknown: dict) -> int:
        if len(data) - pos < 2:
            raise _error(pos, "digest algorithm id runs past the end")
        (alg_id,) = _U16.unpack_from(data, pos)
        size = self.sizes.get(alg_id)
        if size is None:
            raise UnknownAlgorithmError(
                _WHAT, pos, f"digest algorithm 0x{alg_id:04x} is not in the Spec ID event")
        alg = self.algs.get(alg_id)
        if alg_id in unknown or alg in digests:
            raise _error(pos, f"digest algorithm 0x{alg_id:04x} appears twice")
        if len(data) - pos - 2 < size:
            raise _error(pos + 2, f"digest of {size} bytes runs past the end")
        value = data[pos + 2:pos + 2 + size]
        if alg is None:
            unknown[alg_id] = value
        else:
            digests[alg] = value
        return pos + 2 + size


def _parse_agile(data: bytes, offset: int, spec_id: SpecIdEvent,
                 events: _Events) -> tuple[HashAlg, ...]:
    reader = _AgileEvents(spec_id)
    read = reader.read
    length = len(data)
    unpack_u32 = _U32.unpack_from
    append = events.events.append
    types = _EVENT_TYPES
    while offset < length:
        pcr, event_type, digests, unknown, pos = read(data, offset, length)
        if length - pos < 4:
            raise _error(pos, f"event size needs 4 bytes, only {length - pos} left")
        end = pos + 4 + unpack_u32(data, pos)[0]
        if end > length:
            _data_end(length, pos, end - pos - 4)
        if event_type == _NO_ACTION:
            events.no_action(offset, pcr, digests, data[pos + 4:end], unknown)
        else:
            if pcr == 0:
                events.pcr0_extended = True
            append(Event(len(events.events), offset, pcr, types.get(event_type, event_type),
                         digests, data[pos + 4:end], unknown))
        offset = end
    return tuple(reader.algs.values())
