"""Tests for the TCG PC Client firmware event log parser and replay."""

from __future__ import annotations

import dataclasses
import struct
import uuid

import pytest

from tests.conftest import EVENTLOG_DIR
from trusted_launch.evidence.algorithms import HashAlg
from trusted_launch.evidence.errors import EventLogError, ParseError, UnknownAlgorithmError
from trusted_launch.evidence.eventlog import (
    EFI_GLOBAL_VARIABLE,
    EfiGpt,
    EfiImageLoad,
    EfiVariable,
    EventType,
    FirmwareBlob,
    HandoffTables,
    NoAction,
    Separator,
    SpecIdEvent,
    StartupLocality,
    TaggedEvent,
    Text,
    Undecodable,
    decode_event_data,
    parse_event_log,
    pcrs_to_json,
    replay,
    replay_event_log,
    secure_boot_enabled,
)

LOG_NAMES = sorted(p.name for p in EVENTLOG_DIR.iterdir() if not p.name.endswith(".json"))
LEGACY_LOGS = {"ebs_event_missing_eventlog", "option_rom_eventlog", "short_no_action_eventlog",
               "windows_gcp_shielded_vm_eventlog"}
SHA1, SHA256 = HashAlg.SHA1, HashAlg.SHA256
NO_ACTION = EventType.EV_NO_ACTION
SEPARATOR = EventType.EV_SEPARATOR


def read_log(name: str) -> bytes:
    return (EVENTLOG_DIR / name).read_bytes()


# --- builders for synthetic logs -------------------------------------------------------------

def spec_id_body(algorithms: list[tuple[int, int]], *, count: int | None = None,
                 vendor: bytes = b"") -> bytes:
    body = b"Spec ID Event03\0" + struct.pack("<IBBBBI", 0, 0, 2, 0, 2,
                                               len(algorithms) if count is None else count)
    body += b"".join(struct.pack("<HH", alg, size) for alg, size in algorithms)
    return body + bytes([len(vendor)]) + vendor


def legacy_event(pcr: int, event_type: int, data: bytes, digest: bytes = bytes(20)) -> bytes:
    return struct.pack("<II", pcr, event_type) + digest + struct.pack("<I", len(data)) + data


def agile_event(pcr: int, event_type: int, data: bytes,
                digests: list[tuple[int, bytes]], *, count: int | None = None) -> bytes:
    out = struct.pack("<III", pcr, event_type, len(digests) if count is None else count)
    out += b"".join(struct.pack("<H", alg) + value for alg, value in digests)
    return out + struct.pack("<I", len(data)) + data


def digests_for(data: bytes, algs=(SHA1, SHA256)) -> list[tuple[int, bytes]]:
    return [(int(alg), alg.digest(data)) for alg in algs]


def agile_log(*events: bytes, algorithms=((4, 20), (0xB, 32))) -> bytes:
    return legacy_event(0, NO_ACTION, spec_id_body(list(algorithms))) + b"".join(events)


def measured(pcr: int, data: bytes, event_type: int = EventType.EV_ACTION) -> bytes:
    return agile_event(pcr, event_type, data, digests_for(data))


def extend_chain(alg: HashAlg, digests: list[bytes], initial: bytes | None = None) -> bytes:
    value = initial if initial is not None else bytes(alg.digest_size)
    for digest in digests:
        value = alg.digest(value + digest)
    return value


# --- real logs --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", LOG_NAMES)
def test_real_log_replays_to_expected_pcrs(name, expected_pcrs):
    assert pcrs_to_json(replay_event_log(read_log(name))) == expected_pcrs[name]


def test_every_expected_log_is_tested(expected_pcrs):
    assert set(expected_pcrs) == set(LOG_NAMES)


@pytest.mark.parametrize("name", LOG_NAMES)
def test_real_log_format_and_banks(name, expected_pcrs):
    log = parse_event_log(read_log(name))
    assert log.legacy is (name in LEGACY_LOGS)
    if log.legacy:
        assert log.banks == (SHA1,) and log.spec_id is None
    else:
        assert isinstance(log.events[0].decoded, SpecIdEvent)
        assert log.spec_id == log.events[0].decoded
        assert {alg.bank_name for alg in log.banks} >= set(expected_pcrs[name])
    assert [event.index for event in log.events] == list(range(len(log.events)))
    assert all(type(event.event_type) is EventType for event in log.events)
    measured = log.events if log.legacy else log.events[1:]
    assert all(set(event.digests) == set(log.banks) for event in measured)


@pytest.mark.parametrize("name", LOG_NAMES)
def test_every_real_event_decodes_without_raising(name):
    for event in parse_event_log(read_log(name)).events:
        decoded = event.decoded
        assert decoded is None or dataclasses.is_dataclass(decoded)


@pytest.mark.parametrize(("name", "locality"), [
    ("fedora41_uefi_binary_bios_measurements", 3), ("short_no_action_eventlog", 3),
    ("crypto_agile_eventlog", None), ("windows_gcp_shielded_vm_eventlog", None)])
def test_startup_locality(name, locality):
    assert parse_event_log(read_log(name)).startup_locality == locality


@pytest.mark.parametrize(("name", "enabled"), [
    ("secureboot_binary_bios_measurements", True), ("sb_cert_eventlog", True),
    ("windows_gcp_shielded_vm_eventlog", True),
    ("coreos_36_shielded_vm_no_secure_boot_eventlog", False),
    ("ubuntu_2104_shielded_vm_no_secure_boot_eventlog", False),
    ("short_no_action_eventlog", None)])
def test_secure_boot_state(name, enabled):
    assert secure_boot_enabled(parse_event_log(read_log(name))) is enabled


def test_fedora_log_decodes_common_records():
    log = parse_event_log(read_log("fedora41_uefi_binary_bios_measurements"))
    by_type: dict[type, list] = {}
    for event in log.events:
        by_type.setdefault(type(event.decoded), []).append(event)
    assert log.spec_id.algorithms == ((4, 20), (0xB, 32))
    secure_boot = next(e.decoded for e in by_type[EfiVariable] if e.decoded.name == "SecureBoot")
    assert secure_boot.guid == EFI_GLOBAL_VARIABLE and secure_boot.data == b"\x00"
    assert {e.decoded.name for e in by_type[EfiVariable]} >= {"PK", "KEK", "db", "dbx", "BootOrder"}
    image = by_type[EfiImageLoad][0].decoded
    assert image.length > 0 and len(image.device_path) > 0
    gpt = by_type[EfiGpt][0].decoded
    assert gpt.partitions and all(p.last_lba >= p.first_lba for p in gpt.partitions)
    assert any(isinstance(e.decoded, FirmwareBlob) and e.decoded.length for e in log.events)
    assert by_type[HandoffTables][0].decoded.tables
    assert any(e.decoded == Text("ACPI DATA") for e in by_type[Text])
    assert all(e.decoded == Separator(0) for e in by_type[Separator])


def test_windows_log_decodes_tagged_events_and_no_pcr_no_action():
    log = parse_event_log(read_log("option_rom_eventlog"))
    assert any(isinstance(e.decoded, TaggedEvent) for e in log.events)
    no_pcr = [e for e in log.events if e.pcr == 0xFFFFFFFF]
    assert no_pcr and all(e.event_type == NO_ACTION for e in no_pcr)
    assert isinstance(no_pcr[0].decoded, NoAction)


def test_event_data_that_does_not_fit_its_type_keeps_raw_bytes():
    log = parse_event_log(read_log("sb_cert_eventlog"))
    bad = [e for e in log.events if isinstance(e.decoded, Undecodable)]
    assert bad
    assert all(e.data and "UEFI_" in e.decoded.problem for e in bad)


def test_events_are_frozen_and_replace_redecodes():
    log = parse_event_log(read_log("crypto_agile_eventlog"))
    event = next(e for e in log.events if e.event_type == SEPARATOR)
    assert event.decoded == Separator(0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.pcr = 7  # type: ignore[misc]
    changed = dataclasses.replace(event, event_type=EventType.EV_EFI_ACTION, data=b"Hello")
    assert changed.decoded == Text("Hello") and changed.pcr == event.pcr
    assert changed != event and dataclasses.replace(event) == event


# --- replay semantics on synthetic logs -------------------------------------------------------

def test_replay_extends_in_order_per_pcr_and_bank():
    log = agile_log(measured(0, b"a"), measured(4, b"b"), measured(0, b"c"))
    pcrs = replay(parse_event_log(log))
    for alg in (SHA1, SHA256):
        assert pcrs[alg][0] == extend_chain(alg, [alg.digest(b"a"), alg.digest(b"c")])
        assert pcrs[alg][4] == extend_chain(alg, [alg.digest(b"b")])
    assert set(pcrs[SHA256]) == {0, 4}


def test_startup_locality_sets_pcr0_initial_value():
    locality = agile_event(0, NO_ACTION, b"StartupLocality\0\x03",
                           [(4, bytes(20)), (0xB, bytes(32))])
    log = parse_event_log(agile_log(locality, measured(0, b"crtm"), measured(1, b"cfg")))
    assert log.startup_locality == 3
    pcrs = replay(log)
    initial = bytes(31) + b"\x03"
    assert pcrs[SHA256][0] == extend_chain(SHA256, [SHA256.digest(b"crtm")], initial)
    assert pcrs[SHA256][1] == extend_chain(SHA256, [SHA256.digest(b"cfg")])


def test_no_action_events_are_never_extended():
    odd = agile_event(5, NO_ACTION, b"SP800-155 Event\0xyz", digests_for(b"x"))
    pcrs = replay(parse_event_log(agile_log(odd, measured(4, b"b"))))
    assert set(pcrs[SHA256]) == {4}


def test_spec_id_only_log_replays_to_nothing():
    log = parse_event_log(agile_log())
    assert not log.legacy and len(log.events) == 1
    assert replay(log) == {}


def test_replay_filters_banks_and_pcrs():
    log = parse_event_log(agile_log(measured(0, b"a"), measured(4, b"b"), measured(7, b"c")))
    pcrs = replay(log, banks=[SHA256, HashAlg.SHA384], pcrs=[4, 7])
    assert list(pcrs) == [SHA256] and set(pcrs[SHA256]) == {4, 7}


def test_unknown_algorithm_in_spec_id_table_is_kept_but_not_replayed():
    sha3 = (0x27, 32)
    event = agile_event(2, EventType.EV_ACTION, b"x",
                        [(4, bytes(20)), (0x27, b"\x33" * 32), (0xB, bytes(32))])
    log = parse_event_log(agile_log(event, algorithms=((4, 20), sha3, (0xB, 32))))
    assert log.banks == (SHA1, SHA256)
    assert log.events[1].unknown_digests == {0x27: b"\x33" * 32}
    assert set(replay(log)) == {SHA1, SHA256}


def test_digests_in_an_order_other_than_the_spec_id_table():
    event = agile_event(3, EventType.EV_ACTION, b"x", list(reversed(digests_for(b"x"))))
    log = parse_event_log(agile_log(event))
    assert log.events[1].digests == {SHA1: SHA1.digest(b"x"), SHA256: SHA256.digest(b"x")}


def test_legacy_log_replays_sha1_only():
    data = legacy_event(0, EventType.EV_POST_CODE, b"p", SHA1.digest(b"p"))
    data += legacy_event(0xFFFFFFFF, NO_ACTION, b"ignored", b"\x01" * 20)
    log = parse_event_log(data)
    assert log.legacy and log.banks == (SHA1,)
    assert replay(log) == {SHA1: {0: extend_chain(SHA1, [SHA1.digest(b"p")])}}


def test_pcrs_to_json_orders_banks_and_pcrs_numerically():
    pcrs = {SHA256: {10: b"\x02", 2: b"\x01"}, SHA1: {0: b"\xff"}}
    assert pcrs_to_json(pcrs) == {"sha1": {"0": "ff"}, "sha256": {"2": "01", "10": "02"}}
    assert list(pcrs_to_json(pcrs)["sha256"]) == ["2", "10"]


def test_secure_boot_requires_every_measurement_to_say_enabled():
    def secure_boot_event(value: bytes) -> bytes:
        name = "SecureBoot".encode("utf-16-le")
        data = EFI_GLOBAL_VARIABLE.bytes_le + struct.pack("<QQ", 10, len(value)) + name + value
        return measured(7, data, EventType.EV_EFI_VARIABLE_DRIVER_CONFIG)

    assert secure_boot_enabled(parse_event_log(agile_log(secure_boot_event(b"\x01")))) is True
    both = agile_log(secure_boot_event(b"\x01"), secure_boot_event(b"\x00"))
    assert secure_boot_enabled(parse_event_log(both)) is False
    assert secure_boot_enabled(parse_event_log(agile_log(measured(7, b"x")))) is None


# --- hostile input ----------------------------------------------------------------------------

def assert_log_error(data: bytes, offset: int, words: str, kind=EventLogError) -> None:
    with pytest.raises(kind) as info:
        parse_event_log(data)
    assert isinstance(info.value, ParseError)
    assert info.value.offset == offset, str(info.value)
    assert words in info.value.problem, str(info.value)
    assert str(info.value).startswith(f"event log at offset {offset}: ")


def test_empty_log():
    assert_log_error(b"", 0, "empty event log")


def test_truncated_first_header():
    assert_log_error(b"\0" * 31, 0, "event header needs 32 bytes, only 31 left")


def test_event_size_past_the_end():
    log = agile_log()
    event = measured(1, b"abcdef")
    size_at = len(log) + len(event) - 10
    assert_log_error(log + event[:-3], size_at, "event size 6 runs past the end (3 bytes left)")


def test_huge_event_size():
    event = measured(1, b"")[:-4] + struct.pack("<I", 0xFFFFFFFF)
    base = len(agile_log())
    assert_log_error(agile_log(event), base + len(event) - 4, "event size 4294967295")


def test_digest_count_of_two_to_the_32_minus_one():
    event = agile_event(1, EventType.EV_ACTION, b"", digests_for(b""), count=0xFFFFFFFF)
    assert_log_error(agile_log(event), len(agile_log()) + 8, "digest count 4294967295")


def test_digest_count_zero_when_spec_id_lists_banks():
    event = agile_event(1, EventType.EV_ACTION, b"", [])
    assert_log_error(agile_log(event), len(agile_log()) + 8, "digest count 0 does not match")


def test_digest_algorithm_not_in_spec_id_table():
    event = agile_event(1, EventType.EV_ACTION, b"", [(4, bytes(20)), (0xC, bytes(48))])
    offset = len(agile_log()) + 12 + 22
    assert_log_error(agile_log(event), offset, "0x000c is not in the Spec ID",
                     UnknownAlgorithmError)


def test_digest_algorithm_listed_twice():
    event = agile_event(1, EventType.EV_ACTION, b"", [(4, bytes(20)), (4, bytes(20))])
    assert_log_error(agile_log(event), len(agile_log()) + 12 + 22, "appears twice")


def test_truncated_digest():
    event = agile_event(1, EventType.EV_ACTION, b"", digests_for(b""))
    base = len(agile_log())
    assert_log_error(agile_log(event[:12 + 22 + 10]), base + 12 + 22 + 2,
                     "digest of 32 bytes runs past the end")


def test_truncated_agile_header():
    assert_log_error(agile_log(b"\x01\x00\x00"), len(agile_log()), "event header needs 12 bytes")


@pytest.mark.parametrize("pcr", [31, 0x7FFFFFFF, 0xFFFFFFFF])
def test_pcr_index_out_of_range(pcr):
    event = agile_event(pcr, SEPARATOR, bytes(4), digests_for(bytes(4)))
    assert_log_error(agile_log(event), len(agile_log()), f"PCR index {pcr} is out of range")


def test_pcr_index_up_to_30_is_allowed():
    pcrs = replay(parse_event_log(agile_log(measured(30, b"x"), measured(23, b"y"))))
    assert set(pcrs[SHA256]) == {23, 30}


def test_no_action_with_pcr_31_is_still_rejected():
    event = agile_event(31, NO_ACTION, b"x", digests_for(b""))
    assert_log_error(agile_log(event), len(agile_log()), "PCR index 31")


@pytest.mark.parametrize("count", [0, 17, 0xFFFFFFFF, 3])
def test_spec_id_with_absurd_number_of_algorithms(count):
    data = legacy_event(0, NO_ACTION, spec_id_body([(4, 20), (0xB, 32)], count=count))
    assert_log_error(data, 32 + 24, f"numberOfAlgorithms {count} is invalid")


def test_spec_id_lists_an_algorithm_twice():
    data = legacy_event(0, NO_ACTION, spec_id_body([(4, 20), (4, 20)]))
    assert_log_error(data, 32 + 28 + 4, "lists algorithm 0x0004 twice")


@pytest.mark.parametrize(("size", "words"), [(20, "sha256 a digest size of 20"),
                                             (0, "digest size 0"), (65, "digest size 65")])
def test_spec_id_digest_sizes_are_checked(size, words):
    data = legacy_event(0, NO_ACTION, spec_id_body([(0xB, size)]))
    assert_log_error(data, 32 + 28, words)


def test_spec_id_vendor_info_size_must_match():
    body = spec_id_body([(0xB, 32)], vendor=b"abc")[:-1]
    assert_log_error(legacy_event(0, NO_ACTION, body), 32 + 28 + 4,
                     "vendorInfoSize does not match")


def test_spec_id_too_short():
    data = legacy_event(0, NO_ACTION, b"Spec ID Event03\0\0\0")
    assert_log_error(data, 32, "Spec ID event is 18")


def test_spec_id_digest_must_be_zero():
    data = legacy_event(0, NO_ACTION, spec_id_body([(0xB, 32)]), b"\x01" * 20)
    assert_log_error(data, 8, "Spec ID event digest is not zero")


def test_spec_id_must_be_in_pcr0():
    assert_log_error(legacy_event(1, NO_ACTION, spec_id_body([(0xB, 32)])), 0,
                     "Spec ID event is in PCR 1")


def test_second_startup_locality_is_rejected():
    locality = agile_event(0, NO_ACTION, b"StartupLocality\0\x03", digests_for(b""))
    offset = len(agile_log(locality))
    assert_log_error(agile_log(locality, locality), offset, "second StartupLocality")


def test_startup_locality_after_pcr0_extend_is_rejected():
    locality = agile_event(0, NO_ACTION, b"StartupLocality\0\x03", digests_for(b""))
    offset = len(agile_log(measured(0, b"a")))
    assert_log_error(agile_log(measured(0, b"a"), locality), offset, "after PCR0 was extended")


def test_truncated_legacy_log():
    data = read_log("windows_gcp_shielded_vm_eventlog")
    with pytest.raises(EventLogError, match=r"runs past the end|needs 32 bytes"):
        parse_event_log(data[:-1])


@pytest.mark.parametrize("name", LOG_NAMES)
def test_every_truncation_point_of_a_real_log_fails_closed(name):
    data = read_log(name)
    log = parse_event_log(data)
    boundaries = {event.offset for event in log.events} | {len(data)}
    for cut in range(1, len(data), max(1, len(data) // 150)):
        if cut in boundaries:
            assert len(parse_event_log(data[:cut]).events) < len(log.events)
        else:
            with pytest.raises(EventLogError):
                parse_event_log(data[:cut])


# --- event data decoders ----------------------------------------------------------------------

def variable_data(name: str, value: bytes, *, name_len: int | None = None,
                  value_len: int | None = None) -> bytes:
    encoded = name.encode("utf-16-le")
    lengths = struct.pack("<QQ", len(name) if name_len is None else name_len,
                          len(value) if value_len is None else value_len)
    return EFI_GLOBAL_VARIABLE.bytes_le + lengths + encoded + value


def test_decode_variable():
    decoded = decode_event_data(EventType.EV_EFI_VARIABLE_BOOT, variable_data("Boot0001", b"\1"))
    assert decoded == EfiVariable(EFI_GLOBAL_VARIABLE, "Boot0001", b"\1")


@pytest.mark.parametrize("data", [
    variable_data("Boot", b"x", name_len=2**63), variable_data("Boot", b"x", value_len=2**64 - 1),
    variable_data("Boot", b"x")[:20], variable_data("Boot", b"x") + b"junk"])
def test_bad_variable_data_is_undecodable(data):
    decoded = decode_event_data(EventType.EV_EFI_VARIABLE_DRIVER_CONFIG, data)
    assert isinstance(decoded, Undecodable) and "UEFI_VARIABLE_DATA" in decoded.problem


def test_bad_variable_inside_a_log_does_not_fail_the_log():
    event = measured(1, b"\xff" * 10, EventType.EV_EFI_VARIABLE_BOOT)
    log = parse_event_log(agile_log(event))
    assert isinstance(log.events[1].decoded, Undecodable)
    assert log.events[1].data == b"\xff" * 10
    assert 1 in replay(log)[SHA256]


def test_decode_image_load():
    data = struct.pack("<QQQQ", 0x1000, 0x2000, 0, 4) + b"\x7f\xff\x04\x00"
    decoded = decode_event_data(EventType.EV_EFI_BOOT_SERVICES_APPLICATION, data)
    assert decoded == EfiImageLoad(0x1000, 0x2000, 0, b"\x7f\xff\x04\x00")
    bad = struct.pack("<QQQQ", 0, 0, 0, 2**64 - 1)
    assert isinstance(decode_event_data(EventType.EV_EFI_BOOT_SERVICES_DRIVER, bad), Undecodable)


def gpt_data(partitions: int, *, claimed: int | None = None) -> bytes:
    disk = uuid.UUID("12345678-1234-5678-1234-567812345678")
    header = b"EFI PART" + bytes(48) + disk.bytes_le + struct.pack("<QIII", 2, 128, 128, 0)
    entry = (uuid.uuid4().bytes_le * 2 + struct.pack("<QQQ", 34, 2047, 0)
             + "EFI System".encode("utf-16-le").ljust(72, b"\0"))
    count = partitions if claimed is None else claimed
    return header + struct.pack("<Q", count) + entry * partitions


def test_decode_gpt():
    decoded = decode_event_data(EventType.EV_EFI_GPT_EVENT, gpt_data(2))
    assert isinstance(decoded, EfiGpt) and len(decoded.partitions) == 2
    assert decoded.disk_guid == uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert decoded.partitions[0].name == "EFI System" and decoded.partitions[0].last_lba == 2047


def test_gpt_partition_count_past_the_end_is_undecodable():
    decoded = decode_event_data(EventType.EV_EFI_GPT_EVENT, gpt_data(1, claimed=2**40))
    assert isinstance(decoded, Undecodable) and "NumberOfPartitions" in decoded.problem


def test_decode_blobs_and_handoff_tables():
    blob2 = b"\x05fvmai" + struct.pack("<QQ", 0xFF000000, 4096)
    assert decode_event_data(EventType.EV_EFI_PLATFORM_FIRMWARE_BLOB2, blob2) == \
        FirmwareBlob(0xFF000000, 4096, "fvmai")
    guid = uuid.uuid4()
    tables = struct.pack("<Q", 1) + guid.bytes_le + struct.pack("<Q", 0x7000)
    assert decode_event_data(EventType.EV_EFI_HANDOFF_TABLES, tables) == \
        HandoffTables(((guid, 0x7000),))
    huge = struct.pack("<Q", 2**64 - 1)
    assert isinstance(decode_event_data(EventType.EV_EFI_HANDOFF_TABLES, huge), Undecodable)


def test_decode_text_separator_tag_and_unknown():
    utf16 = "GCE Virtual Firmware v1".encode("utf-16-le") + b"\0\0"
    assert decode_event_data(EventType.EV_S_CRTM_VERSION, utf16) == Text("GCE Virtual Firmware v1")
    assert decode_event_data(EventType.EV_EFI_ACTION, b"Exit Boot Services Invocation") == \
        Text("Exit Boot Services Invocation")
    assert decode_event_data(EventType.EV_IPL, b"\x00\x01\xfe") is None
    assert decode_event_data(SEPARATOR, b"\xff\xff\xff\xff").error
    assert decode_event_data(EventType.EV_EVENT_TAG, struct.pack("<II", 7, 2) + b"ab") == \
        TaggedEvent(7, b"ab")
    assert decode_event_data(0x12345, b"anything") is None
    assert decode_event_data(NO_ACTION, b"StartupLocality\0\x04") == StartupLocality(4)


def test_unknown_event_type_is_kept_raw():
    event = agile_event(9, 0x4000_0001, b"\x01\x02", digests_for(b"z"))
    parsed = parse_event_log(agile_log(event)).events[1]
    assert parsed.event_type == 0x4000_0001 and type(parsed.event_type) is int
    assert parsed.data == b"\x01\x02"
    assert parsed.decoded is None and parsed.type_name == "EV_UNKNOWN(0x40000001)"
