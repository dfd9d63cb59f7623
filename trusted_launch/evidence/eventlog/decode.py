"""Decoders for the data of individual event types.

Each decoder takes the event data and returns a record, or raises
:class:`ParseError`; :func:`decode_event_data` turns such a failure into an
:class:`Undecodable` record so that one odd event never fails a whole log.
"""

from __future__ import annotations

import re
import struct
import uuid
from collections.abc import Callable

from trusted_launch.evidence.binary import Reader
from trusted_launch.evidence.errors import ParseError
from trusted_launch.evidence.eventlog.records import (
    EfiGpt,
    EfiImageLoad,
    EfiVariable,
    EventType,
    FirmwareBlob,
    GptPartition,
    HandoffTables,
    NoAction,
    Separator,
    StartupLocality,
    TaggedEvent,
    Text,
    Undecodable,
)

_VARIABLE_HEADER = struct.Struct("<16sQQ")
_IMAGE_LOAD_HEADER = struct.Struct("<QQQQ")
_GPT_HEADER_SIZE = 92
_GPT_ENTRY = struct.Struct("<16s16sQQQ72s")
_U32_PAIR = struct.Struct("<II")
_BLOB = struct.Struct("<QQ")
_PRINTABLE = re.compile(rb"[\x20-\x7e\t\r\n]*\Z")
_STARTUP_LOCALITY = b"StartupLocality\0"
_MAX_DECODED_COUNT = 1 << 16

Decoder = Callable[[bytes], object]


def _utf16(raw: bytes) -> str:
    return raw.decode("utf-16-le", errors="replace")


def decode_text(data: bytes) -> Text | None:
    """ASCII or UTF-16LE text without trailing NULs, else None."""
    stripped = data.rstrip(b"\0")
    if _PRINTABLE.match(stripped):
        return Text(stripped.decode("ascii"))
    if len(data) % 2 == 0 and data[1::2].count(0) == len(data) // 2:
        text = data[0::2].rstrip(b"\0")
        if _PRINTABLE.match(text):
            return Text(text.decode("ascii"))
    return None


def decode_no_action(data: bytes) -> object:
    if data.startswith(_STARTUP_LOCALITY) and len(data) == len(_STARTUP_LOCALITY) + 1:
        return StartupLocality(data[-1])
    return NoAction(data[:16], data[16:])


def decode_separator(data: bytes) -> Separator | None:
    if len(data) == 4:
        return Separator(int.from_bytes(data, "little"))
    return None


def decode_tagged(data: bytes) -> TaggedEvent:
    reader = Reader(data, "EV_EVENT_TAG data")
    tag_id = reader.u32le("taggedEventID")
    size = reader.u32le("taggedEventDataSize")
    tagged = reader.bytes(size, "taggedEventData")
    reader.expect_end()
    return TaggedEvent(tag_id, tagged)


def decode_variable(data: bytes) -> EfiVariable:
    if len(data) < _VARIABLE_HEADER.size:
        raise ParseError("UEFI_VARIABLE_DATA", 0, f"{len(data)} bytes is too short")
    guid, name_chars, data_len = _VARIABLE_HEADER.unpack_from(data)
    reader = Reader(data, "UEFI_VARIABLE_DATA", start=_VARIABLE_HEADER.size)
    if name_chars > reader.remaining // 2:
        raise reader.error(f"UnicodeNameLength {name_chars} runs past the end")
    name = _utf16(reader.bytes(2 * name_chars, "UnicodeName"))
    if data_len != reader.remaining:
        raise reader.error(f"VariableDataLength {data_len} does not match the "
                           f"{reader.remaining} bytes that follow")
    value = reader.bytes(data_len, "VariableData")
    return EfiVariable(uuid.UUID(bytes_le=guid), name, value)


def decode_image_load(data: bytes) -> EfiImageLoad:
    if len(data) < _IMAGE_LOAD_HEADER.size:
        raise ParseError("UEFI_IMAGE_LOAD_EVENT", 0, f"{len(data)} bytes is too short")
    location, length, link_address, path_len = _IMAGE_LOAD_HEADER.unpack_from(data)
    if path_len != len(data) - _IMAGE_LOAD_HEADER.size:
        raise ParseError("UEFI_IMAGE_LOAD_EVENT", 24,
                         f"LengthOfDevicePath {path_len} does not match the "
                         f"{len(data) - _IMAGE_LOAD_HEADER.size} bytes that follow")
    return EfiImageLoad(location, length, link_address, data[_IMAGE_LOAD_HEADER.size:])


def decode_gpt(data: bytes) -> EfiGpt:
    reader = Reader(data, "UEFI_GPT_DATA")
    header = reader.bytes(_GPT_HEADER_SIZE, "UEFI_PARTITION_TABLE_HEADER")
    if header[:8] != b"EFI PART":
        raise ParseError("UEFI_GPT_DATA", 0, "partition table header signature is not 'EFI PART'")
    disk_guid = uuid.UUID(bytes_le=header[56:72])
    entry_size = int.from_bytes(header[84:88], "little")
    count = reader.u64le("NumberOfPartitions")
    if entry_size < _GPT_ENTRY.size:
        raise ParseError("UEFI_GPT_DATA", 84, f"SizeOfPartitionEntry {entry_size} < 128")
    if count > reader.remaining // entry_size:
        raise reader.error(f"NumberOfPartitions {count} runs past the end")
    partitions = []
    for _ in range(count):
        entry = reader.bytes(entry_size, "partition entry")
        type_guid, unique, first, last, attributes, name = _GPT_ENTRY.unpack_from(entry)
        partitions.append(GptPartition(
            uuid.UUID(bytes_le=type_guid), uuid.UUID(bytes_le=unique), first, last, attributes,
            _utf16(name).rstrip("\0")))
    reader.expect_end()
    return EfiGpt(disk_guid, header, tuple(partitions))


def decode_blob(data: bytes) -> FirmwareBlob:
    if len(data) != _BLOB.size:
        raise ParseError("UEFI_PLATFORM_FIRMWARE_BLOB", 0, f"size {len(data)} is not 16")
    return FirmwareBlob(*_BLOB.unpack(data))


def _description(reader: Reader) -> str:
    size = reader.u8("description size")
    return reader.bytes(size, "description").rstrip(b"\0").decode("ascii", errors="replace")


def decode_blob2(data: bytes) -> FirmwareBlob:
    reader = Reader(data, "UEFI_PLATFORM_FIRMWARE_BLOB2")
    description = _description(reader)
    base = reader.u64le("BlobBase")
    length = reader.u64le("BlobLength")
    reader.expect_end()
    return FirmwareBlob(base, length, description)


def _tables(reader: Reader) -> tuple[tuple[uuid.UUID, int], ...]:
    count = reader.u64le("NumberOfTables")
    if count > reader.remaining // 24 or count > _MAX_DECODED_COUNT:
        raise reader.error(f"NumberOfTables {count} runs past the end")
    tables = []
    for _ in range(count):
        guid = uuid.UUID(bytes_le=reader.bytes(16, "VendorGuid"))
        tables.append((guid, reader.u64le("VendorTable")))
    reader.expect_end()
    return tuple(tables)


def decode_handoff(data: bytes) -> HandoffTables:
    return HandoffTables(_tables(Reader(data, "UEFI_HANDOFF_TABLE_POINTERS")))


def decode_handoff2(data: bytes) -> HandoffTables:
    reader = Reader(data, "UEFI_HANDOFF_TABLE_POINTERS2")
    description = _description(reader)
    return HandoffTables(_tables(reader), description)


def decode_post_code(data: bytes) -> object | None:
    """A POST code string ("ACPI DATA") or a firmware blob."""
    text = decode_text(data)
    if text is not None or len(data) != _BLOB.size:
        return text
    return decode_blob(data)


def decode_post_code2(data: bytes) -> object | None:
    text = decode_text(data)
    return text if text is not None else decode_blob2(data)


_T = EventType
_DECODERS: dict[int, Decoder] = {
    _T.EV_NO_ACTION: decode_no_action,
    _T.EV_SEPARATOR: decode_separator,
    _T.EV_EVENT_TAG: decode_tagged,
    _T.EV_POST_CODE: decode_post_code,
    _T.EV_POST_CODE2: decode_post_code2,
    _T.EV_EFI_VARIABLE_DRIVER_CONFIG: decode_variable,
    _T.EV_EFI_VARIABLE_BOOT: decode_variable,
    _T.EV_EFI_VARIABLE_BOOT2: decode_variable,
    _T.EV_EFI_VARIABLE_AUTHORITY: decode_variable,
    _T.EV_EFI_BOOT_SERVICES_APPLICATION: decode_image_load,
    _T.EV_EFI_BOOT_SERVICES_DRIVER: decode_image_load,
    _T.EV_EFI_RUNTIME_SERVICES_DRIVER: decode_image_load,
    _T.EV_EFI_GPT_EVENT: decode_gpt,
    _T.EV_EFI_GPT_EVENT2: decode_gpt,
    _T.EV_EFI_PLATFORM_FIRMWARE_BLOB: decode_blob,
    _T.EV_EFI_PLATFORM_FIRMWARE_BLOB2: decode_blob2,
    _T.EV_EFI_HANDOFF_TABLES: decode_handoff,
    _T.EV_EFI_HANDOFF_TABLES2: decode_handoff2,
}
for _text_type in (_T.EV_PREBOOT_CERT, _T.EV_ACTION, _T.EV_S_CRTM_CONTENTS, _T.EV_S_CRTM_VERSION,
                   _T.EV_CPU_MICROCODE, _T.EV_PLATFORM_CONFIG_FLAGS, _T.EV_TABLE_OF_DEVICES,
                   _T.EV_COMPACT_HASH, _T.EV_IPL, _T.EV_IPL_PARTITION_DATA, _T.EV_NONHOST_CODE,
                   _T.EV_NONHOST_CONFIG, _T.EV_NONHOST_INFO, _T.EV_OMIT_BOOT_DEVICE_EVENTS,
                   _T.EV_EFI_ACTION, _T.EV_EFI_HCRTM_EVENT):
    _DECODERS[_text_type] = decode_text


def decode_event_data(event_type: int, data: bytes) -> object | None:
    """The typed record for ``data``; None for unknown or opaque data."""
    decoder = _DECODERS.get(event_type)
    if decoder is None:
        return None
    try:
        return decoder(data)
    except ParseError as exc:
        return Undecodable(str(exc))
