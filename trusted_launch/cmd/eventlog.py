"""``trusted-launch eventlog``: replay or list a TCG firmware event log."""

from __future__ import annotations

import argparse
import json
import pathlib

from trusted_launch.evidence.eventlog import (
    EfiGpt,
    EfiImageLoad,
    EfiVariable,
    Event,
    EventLog,
    FirmwareBlob,
    HandoffTables,
    NoAction,
    Separator,
    SpecIdEvent,
    StartupLocality,
    TaggedEvent,
    Text,
    Undecodable,
    parse_event_log,
    pcrs_to_json,
    replay,
    secure_boot_enabled,
)

_SUMMARY_WIDTH = 70
_DIGEST_PREFIX = 8


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eventlog", help="TCG PC Client firmware event logs (binary_bios_measurements)")
    actions = parser.add_subparsers(dest="action", required=True)
    replay_parser = actions.add_parser("replay", help="replay the log to PCR values")
    replay_parser.add_argument("file", type=pathlib.Path)
    replay_parser.add_argument("--json", action="store_true",
                               help='print {"<bank>": {"<pcr>": "<hex>"}} only')
    replay_parser.set_defaults(func=replay_command)
    show_parser = actions.add_parser("show", help="list the events of the log")
    show_parser.add_argument("file", type=pathlib.Path)
    show_parser.set_defaults(func=show_command)


def _load(path: pathlib.Path) -> EventLog:
    return parse_event_log(path.read_bytes())


def replay_command(args: argparse.Namespace) -> int:
    pcrs = pcrs_to_json(replay(_load(args.file)))
    if args.json:
        print(json.dumps(pcrs, sort_keys=False))
        return 0
    for bank, values in pcrs.items():
        for pcr, value in values.items():
            print(f"{bank:<7} PCR{pcr:<3} {value}")
    if not pcrs:
        print("no PCR was extended")
    return 0


def show_command(args: argparse.Namespace) -> int:
    log = _load(args.file)
    print(_header(log))
    for event in log.events:
        print(format_event(event))
    return 0


def _header(log: EventLog) -> str:
    kind = "legacy SHA1" if log.legacy else "crypto-agile"
    banks = ",".join(alg.bank_name for alg in log.banks)
    secure_boot = {True: "on", False: "off", None: "not measured"}[secure_boot_enabled(log)]
    return (f"{kind} log, {len(log.events)} events, banks {banks}, startup locality "
            f"{log.startup_locality if log.startup_locality is not None else '-'}, "
            f"secure boot {secure_boot}")


def format_event(event: Event) -> str:
    """One line: index, PCR, type name, abbreviated digests, summary of the data."""
    pcr = "-" if event.pcr == 0xFFFFFFFF else str(event.pcr)
    digests = " ".join(f"{alg.bank_name}:{value.hex()[:_DIGEST_PREFIX]}"
                       for alg, value in event.digests.items())
    return f"{event.index:4} {pcr:>3} {event.type_name:<34} {digests}  {summarize(event)}"


def summarize(event: Event) -> str:
    """A one-line description of the event data."""
    text = _describe(event.decoded, event.data)
    text = text.replace("\n", " ").replace("\r", " ")
    return text if len(text) <= _SUMMARY_WIDTH else text[:_SUMMARY_WIDTH - 3] + "..."


def _describe(decoded: object, data: bytes) -> str:
    if isinstance(decoded, Text):
        return repr(decoded.text)
    if isinstance(decoded, EfiVariable):
        return f"{decoded.name} {{{decoded.guid}}} ({len(decoded.data)} bytes)"
    if isinstance(decoded, EfiImageLoad):
        return (f"image at 0x{decoded.location:x}, {decoded.length} bytes, device path "
                f"{len(decoded.device_path)} bytes")
    if isinstance(decoded, EfiGpt):
        return f"GPT disk {decoded.disk_guid}, {len(decoded.partitions)} partitions"
    if isinstance(decoded, SpecIdEvent):
        algs = ",".join(f"0x{alg:04x}/{size}" for alg, size in decoded.algorithms)
        return f"Spec ID Event03 v{'.'.join(map(str, decoded.spec_version))} algorithms {algs}"
    if isinstance(decoded, StartupLocality):
        return f"StartupLocality {decoded.locality}"
    if isinstance(decoded, Separator):
        return "separator (error)" if decoded.error else f"separator {decoded.value}"
    if isinstance(decoded, FirmwareBlob):
        label = f"{decoded.description} " if decoded.description else ""
        return f"{label}blob at 0x{decoded.base:x}, {decoded.length} bytes"
    if isinstance(decoded, HandoffTables):
        return f"{len(decoded.tables)} handoff tables"
    if isinstance(decoded, TaggedEvent):
        return f"tag 0x{decoded.tag_id:x}, {len(decoded.data)} bytes"
    if isinstance(decoded, NoAction):
        return f"no action {decoded.signature.rstrip(bytes(1))!r}, {len(decoded.body)} bytes"
    if isinstance(decoded, Undecodable):
        return f"undecodable ({decoded.problem}), {len(data)} bytes"
    return f"{len(data)} bytes {data[:16].hex()}"
