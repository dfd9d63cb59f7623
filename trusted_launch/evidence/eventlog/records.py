"""Event types and the typed records that event data decodes into."""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass

EFI_GLOBAL_VARIABLE = uuid.UUID("8be4df61-93ca-11d2-aa0d-00e098032b8c")
EFI_IMAGE_SECURITY_DATABASE = uuid.UUID("d719b2cb-3d3a-4596-a3bc-dad00e67656f")


class EventType(enum.IntEnum):
    """Event types of the TCG PC Client Platform Firmware Profile."""

    EV_PREBOOT_CERT = 0x0
    EV_POST_CODE = 0x1
    EV_UNUSED = 0x2
    EV_NO_ACTION = 0x3
    EV_SEPARATOR = 0x4
    EV_ACTION = 0x5
    EV_EVENT_TAG = 0x6
    EV_S_CRTM_CONTENTS = 0x7
    EV_S_CRTM_VERSION = 0x8
    EV_CPU_MICROCODE = 0x9
    EV_PLATFORM_CONFIG_FLAGS = 0xA
    EV_TABLE_OF_DEVICES = 0xB
    EV_COMPACT_HASH = 0xC
    EV_IPL = 0xD
    EV_IPL_PARTITION_DATA = 0xE
    EV_NONHOST_CODE = 0xF
    EV_NONHOST_CONFIG = 0x10
    EV_NONHOST_INFO = 0x11
    EV_OMIT_BOOT_DEVICE_EVENTS = 0x12
    EV_POST_CODE2 = 0x13
    EV_EFI_EVENT_BASE = 0x80000000
    EV_EFI_VARIABLE_DRIVER_CONFIG = 0x80000001
    EV_EFI_VARIABLE_BOOT = 0x80000002
    EV_EFI_BOOT_SERVICES_APPLICATION = 0x80000003
    EV_EFI_BOOT_SERVICES_DRIVER = 0x80000004
    EV_EFI_RUNTIME_SERVICES_DRIVER = 0x80000005
    EV_EFI_GPT_EVENT = 0x80000006
    EV_EFI_ACTION = 0x80000007
    EV_EFI_PLATFORM_FIRMWARE_BLOB = 0x80000008
    EV_EFI_HANDOFF_TABLES = 0x80000009
    EV_EFI_PLATFORM_FIRMWARE_BLOB2 = 0x8000000A
    EV_EFI_HANDOFF_TABLES2 = 0x8000000B
    EV_EFI_VARIABLE_BOOT2 = 0x8000000C
    EV_EFI_GPT_EVENT2 = 0x8000000D
    EV_EFI_HCRTM_EVENT = 0x80000010
    EV_EFI_VARIABLE_AUTHORITY = 0x800000E0
    EV_EFI_SPDM_FIRMWARE_BLOB = 0x800000E1
    EV_EFI_SPDM_FIRMWARE_CONFIG = 0x800000E2
    EV_EFI_SPDM_DEVICE_POLICY = 0x800000E3
    EV_EFI_SPDM_DEVICE_AUTHORITY = 0x800000E4


def event_type_name(event_type: int) -> str:
    """``EV_SEPARATOR`` for a known type, ``EV_UNKNOWN(0x...)`` otherwise."""
    try:
        return EventType(event_type).name
    except ValueError:
        return f"EV_UNKNOWN(0x{event_type:08x})"


@dataclass(frozen=True, slots=True)
class SpecIdEvent:
    """TCG_EfiSpecIDEvent ("Spec ID Event03"): the crypto-agile log header."""

    platform_class: int
    spec_version: tuple[int, int, int]  # major, minor, errata
    uintn_size: int  # in 32-bit words: 1 = 32-bit, 2 = 64-bit
    algorithms: tuple[tuple[int, int], ...]  # (TPM_ALG_ID, digest size) in log order
    vendor_info: bytes


@dataclass(frozen=True, slots=True)
class StartupLocality:
    """EV_NO_ACTION "StartupLocality": the locality PCR0 was reset in."""

    locality: int


@dataclass(frozen=True, slots=True)
class NoAction:
    """Any other EV_NO_ACTION event: a 16-byte signature and a body."""

    signature: bytes
    body: bytes


@dataclass(frozen=True, slots=True)
class Text:
    """Event data that is a string (ASCII or UTF-16LE in the log)."""

    text: str


@dataclass(frozen=True, slots=True)
class Separator:
    """EV_SEPARATOR: 0 normally, 0xFFFFFFFF when firmware hit an error."""

    value: int

    @property
    def error(self) -> bool:
        return self.value == 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class TaggedEvent:
    """EV_EVENT_TAG: TCG_PCClientTaggedEvent."""

    tag_id: int
    data: bytes


@dataclass(frozen=True, slots=True)
class EfiVariable:
    """UEFI_VARIABLE_DATA (EV_EFI_VARIABLE_*)."""

    guid: uuid.UUID
    name: str
    data: bytes


@dataclass(frozen=True, slots=True)
class EfiImageLoad:
    """UEFI_IMAGE_LOAD_EVENT (EV_EFI_BOOT/RUNTIME_SERVICES_*)."""

    location: int
    length: int
    link_time_address: int
    device_path: bytes


@dataclass(frozen=True, slots=True)
class GptPartition:
    """One UEFI partition entry of an EV_EFI_GPT_EVENT."""

    type_guid: uuid.UUID
    unique_guid: uuid.UUID
    first_lba: int
    last_lba: int
    attributes: int
    name: str


@dataclass(frozen=True, slots=True)
class EfiGpt:
    """UEFI_GPT_DATA: the partition table header and the used partitions."""

    disk_guid: uuid.UUID
    header: bytes
    partitions: tuple[GptPartition, ...]


@dataclass(frozen=True, slots=True)
class FirmwareBlob:
    """UEFI_PLATFORM_FIRMWARE_BLOB(2): a measured firmware region."""

    base: int
    length: int
    description: str | None = None


@dataclass(frozen=True, slots=True)
class HandoffTables:
    """UEFI_HANDOFF_TABLE_POINTERS(2): configuration tables passed to the OS."""

    tables: tuple[tuple[uuid.UUID, int], ...]
    description: str | None = None


@dataclass(frozen=True, slots=True)
class Undecodable:
    """The event data did not match its type's structure; the raw bytes stay."""

    problem: str
