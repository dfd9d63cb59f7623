"""An event log and its events: raw framing plus lazily decoded data."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from trusted_launch.evidence.algorithms import HashAlg
from trusted_launch.evidence.eventlog.decode import decode_event_data
from trusted_launch.evidence.eventlog.records import SpecIdEvent, event_type_name

_PENDING = object()
_NO_DIGESTS: Mapping[int, bytes] = MappingProxyType({})


@dataclass(frozen=True, init=False)
class Event:
    """One measured event.

    ``digests`` holds the banks this code knows, ``unknown_digests`` those of
    algorithms that only the Spec ID event sizes. ``decoded`` is the typed
    record for ``data`` (None for opaque or unknown types, :class:`Undecodable`
    when the data does not fit its type); it is decoded on first access, so
    parsing and replay never pay for records nobody reads.
    """

    index: int
    offset: int
    pcr: int
    event_type: int  # an EventType member when the type is known
    digests: Mapping[HashAlg, bytes]
    data: bytes
    unknown_digests: Mapping[int, bytes] = field(default_factory=lambda: _NO_DIGESTS)
    _decoded: object = field(default=_PENDING, init=False, repr=False, compare=False)

    def __init__(self, index: int, offset: int, pcr: int, event_type: int,
                 digests: Mapping[HashAlg, bytes], data: bytes,
                 unknown_digests: Mapping[int, bytes] = _NO_DIGESTS,
                 decoded: object = _PENDING) -> None:
        # One __dict__ assignment instead of eight frozen setattr calls: this
        # constructor runs once per event and dominates parsing time.
        object.__setattr__(self, "__dict__", {
            "index": index, "offset": offset, "pcr": pcr, "event_type": event_type,
            "digests": digests, "data": data, "unknown_digests": unknown_digests,
            "_decoded": decoded})

    @property
    def decoded(self) -> object | None:
        value = self._decoded
        if value is _PENDING:
            value = decode_event_data(self.event_type, self.data)
            object.__setattr__(self, "_decoded", value)
        return value

    @property
    def type_name(self) -> str:
        return event_type_name(self.event_type)


@dataclass(frozen=True, slots=True)
class EventLog:
    """A parsed log: all events (the Spec ID header included) in log order."""

    events: tuple[Event, ...]
    banks: tuple[HashAlg, ...]
    legacy: bool
    spec_id: SpecIdEvent | None
    startup_locality: int | None
