"""TCG PC Client firmware event logs: parse, decode and replay to PCR values.

Pure Python over ``struct``: :func:`parse_event_log` frames a crypto-agile or
legacy SHA1 log into :class:`Event` records with decoded data, :func:`replay`
recomputes every PCR bank, :func:`secure_boot_enabled` reads the measured
SecureBoot variable. Malformed framing raises
:class:`~trusted_launch.evidence.errors.EventLogError` (a ParseError naming
the offset); an event whose data does not match its type keeps its raw bytes
and gets an :class:`Undecodable` record instead.
"""

from trusted_launch.evidence.eventlog.decode import decode_event_data
from trusted_launch.evidence.eventlog.events import Event, EventLog
from trusted_launch.evidence.eventlog.parser import (
    MAX_ALGORITHMS,
    MAX_PCR_INDEX,
    parse_event_log,
)
from trusted_launch.evidence.eventlog.records import (
    EFI_GLOBAL_VARIABLE,
    EFI_IMAGE_SECURITY_DATABASE,
    EfiGpt,
    EfiImageLoad,
    EfiVariable,
    EventType,
    FirmwareBlob,
    GptPartition,
    HandoffTables,
    NoAction,
    Separator,
    SpecIdEvent,
    StartupLocality,
    TaggedEvent,
    Text,
    Undecodable,
    event_type_name,
)
from trusted_launch.evidence.eventlog.replay import (
    pcrs_to_json,
    replay,
    replay_event_log,
    secure_boot_enabled,
)

__all__ = [
    "EFI_GLOBAL_VARIABLE",
    "EFI_IMAGE_SECURITY_DATABASE",
    "MAX_ALGORITHMS",
    "MAX_PCR_INDEX",
    "EfiGpt",
    "EfiImageLoad",
    "EfiVariable",
    "Event",
    "EventLog",
    "EventType",
    "FirmwareBlob",
    "GptPartition",
    "HandoffTables",
    "NoAction",
    "Separator",
    "SpecIdEvent",
    "StartupLocality",
    "TaggedEvent",
    "Text",
    "Undecodable",
    "decode_event_data",
    "event_type_name",
    "parse_event_log",
    "pcrs_to_json",
    "replay",
    "replay_event_log",
    "secure_boot_enabled",
]
