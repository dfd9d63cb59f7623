"""Security profile documents: load, validate and dump.

A profile is a YAML or JSON document such as::

    name: high
    level: 30
    description: Secure Boot on, pinned boot loader
    require_secure_boot: true
    pcrs:            # bank -> PCR -> allowed final values (any one may match)
      sha256:
        "0": ["<hex>", ...]
    event_digests:   # bank -> PCR -> allowlist: every event extended into
      sha256:        # that PCR must have its digest in the list
        "4": ["<hex>", ...]
    forbid_event_types: [EV_EFI_ACTION]
    ima:             # runtime integrity (needs an IMA list + fresh quote)
      require_fresh_quote: true
      allowlist: {"/usr/bin/bash": ["<hex>"]}

Validation fails closed: unknown keys, wrong types, malformed digests,
duplicates and oversized documents raise :class:`PolicyError` naming the
field path and the problem.
"""

from __future__ import annotations

import json
import re
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from trusted_launch.evidence.algorithms import HashAlg, hash_alg_from_name
from trusted_launch.evidence.errors import UnknownAlgorithmError
from trusted_launch.policy.errors import PolicyError

MAX_DOCUMENT_BYTES = 16 * 1024 * 1024
MAX_YAML_BYTES = 2 * 1024 * 1024  # PyYAML is pure Python: larger profiles should be JSON
MAX_FLOW_DEPTH = 100
MAX_DIGESTS = 100_000
MAX_DESCRIPTION = 4096
MAX_PATH_LENGTH = 4096
MAX_LEVEL = 1000
MAX_PCR = 23
NAME_PATTERN = re.compile(r"[a-z0-9_-]{1,32}")
_EVENT_TYPE_PATTERN = re.compile(r"EV_[A-Z0-9_]{1,64}")
_FLOW_INDICATORS = re.compile(r"[\[\]{}]")

# TCG PC Client Platform Firmware Profile event types (name -> value).
EVENT_TYPES: Mapping[str, int] = types.MappingProxyType({
    "EV_PREBOOT_CERT": 0x0, "EV_POST_CODE": 0x1, "EV_UNUSED": 0x2, "EV_NO_ACTION": 0x3,
    "EV_SEPARATOR": 0x4, "EV_ACTION": 0x5, "EV_EVENT_TAG": 0x6, "EV_S_CRTM_CONTENTS": 0x7,
    "EV_S_CRTM_VERSION": 0x8, "EV_CPU_MICROCODE": 0x9, "EV_PLATFORM_CONFIG_FLAGS": 0xA,
    "EV_TABLE_OF_DEVICES": 0xB, "EV_COMPACT_HASH": 0xC, "EV_IPL": 0xD,
    "EV_IPL_PARTITION_DATA": 0xE, "EV_NONHOST_CODE": 0xF, "EV_NONHOST_CONFIG": 0x10,
    "EV_NONHOST_INFO": 0x11, "EV_OMIT_BOOT_DEVICE_EVENTS": 0x12, "EV_POST_CODE2": 0x13,
    "EV_EFI_EVENT_BASE": 0x80000000, "EV_EFI_VARIABLE_DRIVER_CONFIG": 0x80000001,
    "EV_EFI_VARIABLE_BOOT": 0x80000002, "EV_EFI_BOOT_SERVICES_APPLICATION": 0x80000003,
    "EV_EFI_BOOT_SERVICES_DRIVER": 0x80000004, "EV_EFI_RUNTIME_SERVICES_DRIVER": 0x80000005,
    "EV_EFI_GPT_EVENT": 0x80000006, "EV_EFI_ACTION": 0x80000007,
    "EV_EFI_PLATFORM_FIRMWARE_BLOB": 0x80000008, "EV_EFI_HANDOFF_TABLES": 0x80000009,
    "EV_EFI_PLATFORM_FIRMWARE_BLOB2": 0x8000000A, "EV_EFI_HANDOFF_TABLES2": 0x8000000B,
    "EV_EFI_VARIABLE_BOOT2": 0x8000000C, "EV_EFI_GPT_EVENT2": 0x8000000D,
    "EV_EFI_HCRTM_EVENT": 0x80000010, "EV_EFI_VARIABLE_AUTHORITY": 0x800000E0,
    "EV_EFI_SPDM_FIRMWARE_BLOB": 0x800000E1, "EV_EFI_SPDM_FIRMWARE_CONFIG": 0x800000E2,
})
_EVENT_NAMES = {value: name for name, value in EVENT_TYPES.items()}

DigestTable = Mapping[HashAlg, Mapping[int, frozenset[bytes]]]
_TOP_KEYS = frozenset({"name", "level", "description", "require_secure_boot", "pcrs",
                       "event_digests", "forbid_event_types", "ima"})
_IMA_KEYS = frozenset({"require_fresh_quote", "allowlist"})
_IMA_DIGEST_SIZES = frozenset({20, 32, 48, 64})


def event_type_name(value: int) -> str:
    """``EV_...`` name of a TCG event type, or its hex value when unknown."""
    return _EVENT_NAMES.get(int(value), f"event type 0x{int(value):08x}")


def _frozen(mapping: Mapping) -> Mapping:
    return types.MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class ImaPolicy:
    """Runtime (IMA) requirements: file path -> allowed file digests."""

    require_fresh_quote: bool = True
    allowlist: Mapping[str, frozenset[bytes]] = field(default_factory=lambda: _frozen({}))


@dataclass(frozen=True)
class SecurityProfile:
    """A validated security profile; build it with :func:`load_profile`."""

    name: str
    level: int
    description: str = ""
    require_secure_boot: bool = False
    pcrs: DigestTable = field(default_factory=lambda: _frozen({}))
    event_digests: DigestTable = field(default_factory=lambda: _frozen({}))
    forbid_event_types: frozenset[int] = frozenset()
    ima: ImaPolicy | None = None

    def to_document(self) -> dict[str, Any]:
        """The profile as a plain JSON/YAML-ready document (round trips)."""
        doc: dict[str, Any] = {"name": self.name, "level": self.level}
        if self.description:
            doc["description"] = self.description
        doc["require_secure_boot"] = self.require_secure_boot
        if self.pcrs:
            doc["pcrs"] = _table_to_document(self.pcrs)
        if self.event_digests:
            doc["event_digests"] = _table_to_document(self.event_digests)
        if self.forbid_event_types:
            doc["forbid_event_types"] = [
                _EVENT_NAMES.get(t, t) for t in sorted(self.forbid_event_types)]
        if self.ima is not None:
            doc["ima"] = {
                "require_fresh_quote": self.ima.require_fresh_quote,
                "allowlist": {path: sorted(d.hex() for d in digests)
                              for path, digests in sorted(self.ima.allowlist.items())},
            }
        return doc


def _table_to_document(table: DigestTable) -> dict[str, dict[str, list[str]]]:
    return {alg.bank_name: {str(pcr): sorted(d.hex() for d in digests)
                            for pcr, digests in sorted(per_pcr.items())}
            for alg, per_pcr in sorted(table.items())}


def dump_profile(profile: SecurityProfile, *, fmt: str = "yaml") -> str:
    """Serialise ``profile`` as YAML (default) or JSON text."""
    doc = profile.to_document()
    if fmt == "json":
        return json.dumps(doc, indent=2) + "\n"
    if fmt == "yaml":
        return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)
    raise ValueError(f"unknown profile format {fmt!r} (yaml or json)")


def load_profile(document: str | bytes | Mapping[str, Any]) -> SecurityProfile:
    """Parse (YAML or JSON text, or a mapping) and validate a profile."""
    if isinstance(document, str | bytes):
        document = parse_document(document)
    return _Validator().profile(document)


def parse_document(text: str | bytes) -> Any:
    """Decode YAML or JSON text: no aliases, no duplicate keys, bounded size."""
    if len(text) > MAX_DOCUMENT_BYTES:
        raise PolicyError("document", f"larger than {MAX_DOCUMENT_BYTES} bytes")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PolicyError("document", f"not UTF-8 at byte {exc.start}") from None
    if text.lstrip().startswith("{"):
        return _parse_json(text)
    return _parse_yaml(text)


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise PolicyError("document", f"duplicate key {key!r}")
        result[key] = value
    return result


def _parse_json(text: str) -> Any:
    try:
        return json.loads(text, object_pairs_hook=_reject_duplicates)
    except json.JSONDecodeError as exc:
        raise PolicyError("document", f"invalid JSON at line {exc.lineno} column "
                                      f"{exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise PolicyError("document", "nested too deeply") from None


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses aliases (no expansion bombs) and duplicate keys."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise PolicyError("document", f"YAML aliases are not allowed (line "
                                          f"{event.start_mark.line + 1})")
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:
                raise PolicyError("document", "unhashable mapping key at line "
                                              f"{key_node.start_mark.line + 1}") from None
            if duplicate:
                raise PolicyError("document", f"duplicate key {key!r} at line "
                                              f"{key_node.start_mark.line + 1}")
        return super().construct_mapping(node, deep=deep)


def _check_yaml_shape(text: str) -> None:
    """Refuse what makes PyYAML's scanner slow: size and deep flow nesting.

    PyYAML's time grows quadratically with ``[[[[...`` nesting; brackets are
    counted without regard to quoting, which only errs on the safe side.
    """
    if len(text) > MAX_YAML_BYTES:
        raise PolicyError("document", f"YAML documents are limited to {MAX_YAML_BYTES} "
                                      "bytes; use JSON for larger profiles")
    depth = 0
    for match in _FLOW_INDICATORS.finditer(text):
        if match.group() in "[{":
            depth += 1
            if depth > MAX_FLOW_DEPTH:
                raise PolicyError("document", f"more than {MAX_FLOW_DEPTH} unclosed '[' or "
                                              "'{' (nested too deeply)")
        elif depth:
            depth -= 1


def _parse_yaml(text: str) -> Any:
    _check_yaml_shape(text)
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - strict SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise PolicyError("document", f"invalid YAML{where}: {problem}") from None
    except RecursionError:
        raise PolicyError("document", "nested too deeply") from None


class _Validator:
    """Walks a decoded document; counts digests against MAX_DIGESTS."""

    def __init__(self) -> None:
        self.digest_count = 0

    def profile(self, doc: Any) -> SecurityProfile:
        doc = _mapping(doc, "document", _TOP_KEYS)
        for required in ("name", "level"):
            if required not in doc:
                raise PolicyError(required, "required field is missing")
        return SecurityProfile(
            name=_name(doc["name"]),
            level=_level(doc["level"]),
            description=_description(doc.get("description", "")),
            require_secure_boot=_bool(doc.get("require_secure_boot", False),
                                      "require_secure_boot"),
            pcrs=self.table(doc.get("pcrs", {}), "pcrs", allow_empty=False),
            event_digests=self.table(doc.get("event_digests", {}), "event_digests",
                                     allow_empty=True),
            forbid_event_types=_event_types(doc.get("forbid_event_types", [])),
            ima=self.ima(doc["ima"]) if doc.get("ima") is not None else None,
        )

    def table(self, value: Any, path: str, *, allow_empty: bool) -> DigestTable:
        banks = _mapping(value, path)
        table: dict[HashAlg, Mapping[int, frozenset[bytes]]] = {}
        for bank_name, per_pcr in banks.items():
            alg = _bank(bank_name, path)
            bank_path = f"{path}.{bank_name}"
            pcrs: dict[int, frozenset[bytes]] = {}
            for pcr_key, digests in _mapping(per_pcr, bank_path).items():
                pcr = _pcr_index(pcr_key, bank_path)
                if pcr in pcrs:
                    raise PolicyError(f"{bank_path}.{pcr_key}", f"PCR {pcr} listed twice")
                pcrs[pcr] = self.digests(digests, f"{bank_path}.{pcr_key}",
                                         {alg.digest_size}, allow_empty)
            table[alg] = _frozen(pcrs)
        return _frozen(table)

    def digests(self, value: Any, path: str, sizes: Iterable[int],
                allow_empty: bool) -> frozenset[bytes]:
        if not isinstance(value, list):
            raise PolicyError(path, f"expected a list of hex digests, got {_kind(value)}")
        if not value and not allow_empty:
            raise PolicyError(path, "empty list: no value could ever match")
        self.digest_count += len(value)
        if self.digest_count > MAX_DIGESTS:
            raise PolicyError(path, f"more than {MAX_DIGESTS} digests in the profile")
        result = set()
        for i, item in enumerate(value):
            digest = _hex_digest(item, f"{path}[{i}]", frozenset(sizes))
            if digest in result:
                raise PolicyError(f"{path}[{i}]", f"duplicate digest {item}")
            result.add(digest)
        return frozenset(result)

    def ima(self, value: Any) -> ImaPolicy:
        doc = _mapping(value, "ima", _IMA_KEYS)
        allow: dict[str, frozenset[bytes]] = {}
        for path, digests in _mapping(doc.get("allowlist", {}), "ima.allowlist").items():
            if not isinstance(path, str) or not path or len(path) > MAX_PATH_LENGTH:
                raise PolicyError("ima.allowlist", f"file path {path!r} must be a non-empty "
                                                   f"string of at most {MAX_PATH_LENGTH} chars")
            allow[path] = self.digests(digests, f"ima.allowlist.{path}", _IMA_DIGEST_SIZES,
                                       allow_empty=False)
        return ImaPolicy(
            require_fresh_quote=_bool(doc.get("require_fresh_quote", True),
                                      "ima.require_fresh_quote"),
            allowlist=_frozen(allow))


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _mapping(value: Any, path: str, allowed: frozenset[str] | None = None) -> Mapping:
    if not isinstance(value, Mapping):
        raise PolicyError(path, f"expected a mapping, got {_kind(value)}")
    if allowed is not None:
        unknown = sorted(str(k) for k in value if k not in allowed)
        if unknown:
            raise PolicyError(path, f"unknown field(s) {', '.join(unknown)} "
                                    f"(allowed: {', '.join(sorted(allowed))})")
    return value


def _name(value: Any) -> str:
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise PolicyError("name", f"{value!r} is not 1-32 characters of [a-z0-9_-]")
    return value


def _level(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_LEVEL:
        raise PolicyError("level", f"{value!r} is not an integer from 0 to {MAX_LEVEL}")
    return value


def _description(value: Any) -> str:
    if not isinstance(value, str) or len(value) > MAX_DESCRIPTION:
        raise PolicyError("description", f"must be a string of at most {MAX_DESCRIPTION} "
                                         f"characters, got {_kind(value)}")
    return value


def _bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise PolicyError(path, f"expected true or false, got {value!r}")
    return value


def _bank(name: Any, path: str) -> HashAlg:
    if not isinstance(name, str):
        raise PolicyError(path, f"bank name {name!r} is not a string")
    try:
        return hash_alg_from_name(name)
    except UnknownAlgorithmError:
        raise PolicyError(f"{path}.{name}", "unknown PCR bank (sha1, sha256, sha384, "
                                            "sha512, sm3_256)") from None


def _pcr_index(key: Any, path: str) -> int:
    if isinstance(key, str) and key.isascii() and key.isdigit() and len(key) <= 2:
        index = int(key)
    elif isinstance(key, int) and not isinstance(key, bool):
        index = key
    else:
        raise PolicyError(f"{path}.{key}", "PCR index is not a decimal number")
    if not 0 <= index <= MAX_PCR:
        raise PolicyError(f"{path}.{key}", f"PCR index must be 0-{MAX_PCR}")
    return index


def _hex_digest(value: Any, path: str, sizes: frozenset[int]) -> bytes:
    wanted = " or ".join(str(s) for s in sorted(sizes))
    problem = f"not a {wanted}-byte hex digest"
    if not isinstance(value, str):
        raise PolicyError(path, f"{problem} (got {_kind(value)}; quote digests in YAML)")
    try:
        digest = bytes.fromhex(value)
    except ValueError:
        raise PolicyError(path, problem) from None
    if len(digest) not in sizes or len(value) != 2 * len(digest):
        raise PolicyError(path, problem)
    return digest


def _event_types(value: Any) -> frozenset[int]:
    if not isinstance(value, list):
        raise PolicyError("forbid_event_types", f"expected a list, got {_kind(value)}")
    result = set()
    for i, item in enumerate(value):
        path = f"forbid_event_types[{i}]"
        if isinstance(item, str) and item in EVENT_TYPES:
            result.add(EVENT_TYPES[item])
        elif isinstance(item, int) and not isinstance(item, bool) and 0 <= item <= 0xFFFFFFFF:
            result.add(item)
        else:
            hint = "unknown event type name" if (
                isinstance(item, str) and _EVENT_TYPE_PATTERN.fullmatch(item)) else \
                "expected an EV_* name or a 32-bit event type number"
            raise PolicyError(path, f"{hint}: {item!r}")
    return frozenset(result)
