"""Linux IMA measurement lists: parse, verify template hashes, replay PCR 10.

Formats: ``ascii_runtime_measurements`` (also the per-bank lists of newer
kernels, ``ascii_runtime_measurements_sha256`` etc., whose template hash is
that bank's digest) and little-endian ``binary_runtime_measurements``.
Templates: ``ima`` (legacy), ``ima-ng``, ``ima-sig`` and ``ima-buf``.

Layouts follow the kernel (``ima_template_lib.c``, ``ima_fs.c``,
``ima_crypto.c``): an ``ima-ng`` template is ``u32 len, "alg:" NUL digest``
then ``u32 len, name NUL``; ``ima-sig``/``ima-buf`` add ``u32 len, bytes``.
The legacy ``ima`` template is hashed as ``sha1 digest || name`` NUL-padded
to 256 bytes, and stored in binary lists as ``digest, u32 len, name``.
:attr:`ImaEntry.template_data` always holds the bytes the kernel hashes, so
``bank(template_data)`` is the entry's digest for every PCR bank.

A template hash of all zeros marks a violation (or a measurement taken
without a TPM): it is not checked and extends ``0xFF`` of the bank's size.

Paths are bytes in the kernel; :attr:`ImaEntry.path` holds them decoded as
UTF-8 with ``surrogateescape``, so ``path.encode("utf-8", "surrogateescape")``
gives back the exact bytes that were measured.  A path containing NUL is
rejected; one containing a newline can only come from a binary list.
"""

from __future__ import annotations

import binascii
import dataclasses
import hashlib
import struct
import types
from collections.abc import Iterable, Mapping, Sequence

from trusted_launch.evidence.algorithms import HashAlg, hash_alg_from_name
from trusted_launch.evidence.binary import Reader
from trusted_launch.evidence.errors import (
    EvidenceError,
    ParseError,
    PcrIndexMismatch,
    ReplayStateError,
    TemplateHashMismatch,
    UnknownAlgorithmError,
    UnknownTemplateError,
)

IMA_PCR = 10
DEFAULT_BANKS: tuple[HashAlg, ...] = (HashAlg.SHA1, HashAlg.SHA256)
TEMPLATES = ("ima", "ima-ng", "ima-sig", "ima-buf")

_NAME_LEN_MAX = 255            # IMA_EVENT_NAME_LEN_MAX: legacy 'ima' names
_TEMPLATE_NAME_MAX = 64        # template names are short ("ima-sig")
_PCR_MAX = 0xFFFFFFFF
_FILE_DIGEST_SIZES = {
    "sha1": 20, "sha224": 28, "sha256": 32, "sha384": 48, "sha512": 64,
    "sm3": 32, "sha3-256": 32, "sha3-384": 48, "sha3-512": 64,
}
_WEAK_FILE_DIGESTS = frozenset({"md4", "md5", "rmd128", "rmd160", "tgr128", "tgr160"})
_TEMPLATE_HASH_ALGS = {alg.digest_size: alg for alg in
                       (HashAlg.SHA1, HashAlg.SHA256, HashAlg.SHA384, HashAlg.SHA512)}
_HASHLIB = {HashAlg.SHA1: hashlib.sha1, HashAlg.SHA256: hashlib.sha256,
            HashAlg.SHA384: hashlib.sha384, HashAlg.SHA512: hashlib.sha512}
_U32 = struct.Struct("<I")
_BINARY_HEAD = struct.Struct("<I20sI")        # PCR, sha1 template hash, name length
_U32_CACHE = tuple(_U32.pack(n) for n in range(4098))   # PATH_MAX + 2


def _u32(value: int) -> bytes:
    return _U32_CACHE[value] if value < len(_U32_CACHE) else _U32.pack(value)


def _dng_prefix(alg: str, size: int) -> bytes:
    """``u32 len, "alg:" NUL`` of an ``ima-ng`` d-ng field holding ``size`` bytes."""
    head = alg.encode("ascii") + b":\0"
    return _u32(len(head) + size) + head


_DNG_PREFIXES = {alg.encode("ascii"): (_dng_prefix(alg, size), size)
                 for alg, size in _FILE_DIGEST_SIZES.items()}


@dataclasses.dataclass(frozen=True)
class ImaEntry:
    """One measurement-list entry; ``template_data`` is what the kernel hashes."""

    index: int
    pcr: int
    template_hash: bytes
    template_name: str
    template_data: bytes
    file_digest_alg: str
    file_digest: bytes
    path: str
    signature: bytes | None
    buffer: bytes | None = None      # the ``buf`` field of ``ima-buf`` entries

    @property
    def is_violation(self) -> bool:
        return not any(self.template_hash)

    @property
    def path_bytes(self) -> bytes:
        return self.path.encode("utf-8", "surrogateescape")


# --------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------

def _template_data(name: str, alg: str, digest: bytes, path: bytes,
                   extra: bytes | None) -> bytes:
    if name == "ima":
        return digest + path.ljust(_NAME_LEN_MAX + 1, b"\0")
    data = _dng_prefix(alg, len(digest)) + digest + _u32(len(path) + 1) + path + b"\0"
    if name in ("ima-sig", "ima-buf"):
        blob = extra or b""
        data += _u32(len(blob)) + blob
    return data


def encode_entry(template_name: str, path: str, file_digest: bytes, alg: str = "sha256",
                 *, pcr: int = IMA_PCR, signature: bytes | None = None,
                 buffer: bytes | None = None, index: int = 0) -> ImaEntry:
    """A correct entry (sha1 template hash) of any supported template."""
    if template_name not in TEMPLATES:
        raise UnknownTemplateError("IMA entry", 0, f"unknown template {template_name!r}")
    if template_name == "ima":
        alg = "sha1"
    if signature is not None and template_name != "ima-sig":
        raise EvidenceError(f"IMA entry: a {template_name} entry has no signature field")
    path_b = path.encode("utf-8", "surrogateescape")
    _check_file_digest(alg.encode("ascii", "replace"), file_digest, "IMA entry", 0)
    _check_path(path_b, template_name, "IMA entry", 0)
    extra = buffer if template_name == "ima-buf" else signature
    data = _template_data(template_name, alg, file_digest, path_b, extra)
    return ImaEntry(index, pcr, HashAlg.SHA1.digest(data), template_name, data, alg,
                    file_digest, path, signature or None,
                    (buffer or b"") if template_name == "ima-buf" else None)


def encode_ima_ng_entry(path: str, file_digest: bytes, alg: str = "sha256", pcr: int = IMA_PCR,
                        signature: bytes | None = None, *, index: int = 0) -> ImaEntry:
    """A correct ``ima-ng`` entry, or ``ima-sig`` when a signature is given."""
    name = "ima-ng" if signature is None else "ima-sig"
    return encode_entry(name, path, file_digest, alg, pcr=pcr, signature=signature, index=index)


def _ascii_fields(entry: ImaEntry) -> list[bytes]:
    path = entry.path_bytes
    if b"\n" in path:
        raise EvidenceError(f"IMA entry {entry.index}: a path with a newline has no ascii form")
    if entry.template_name == "ima":
        return [entry.file_digest.hex().encode(), path]
    fields = [b"%s:%s" % (entry.file_digest_alg.encode(), entry.file_digest.hex().encode()), path]
    if entry.template_name == "ima-sig":
        fields.append((entry.signature or b"").hex().encode())
    elif entry.template_name == "ima-buf":
        fields.append((entry.buffer or b"").hex().encode())
    return fields


def format_ascii(entries: Iterable[ImaEntry]) -> bytes:
    """Entries in ``ascii_runtime_measurements`` form, byte for byte as the kernel."""
    out = []
    for entry in entries:
        head = b"%2d %s %s" % (entry.pcr, entry.template_hash.hex().encode(),
                               entry.template_name.encode())
        out.append(b" ".join([head, *_ascii_fields(entry)]) + b"\n")
    return b"".join(out)


def format_binary(entries: Iterable[ImaEntry]) -> bytes:
    """Entries in little-endian ``binary_runtime_measurements`` form."""
    out = []
    for entry in entries:
        name = entry.template_name.encode()
        out += [_u32(entry.pcr), entry.template_hash, _u32(len(name)), name]
        if entry.template_name == "ima":
            path = entry.path_bytes
            out += [entry.file_digest, _u32(len(path)), path]
        else:
            out += [_u32(len(entry.template_data)), entry.template_data]
    return b"".join(out)


def synthetic_ima_ng_list(count: int, *, alg: str = "sha256", binary: bool = False) -> bytes:
    """A deterministic ``ima-ng`` list of ``count`` entries with correct template hashes."""
    size = _FILE_DIGEST_SIZES.get(alg)
    if size is None:
        raise UnknownAlgorithmError("synthetic IMA list", 0, f"unknown algorithm {alg!r}")
    entries = [encode_ima_ng_entry("boot_aggregate", hashlib.sha512(b"boot").digest()[:size], alg)]
    for i in range(1, count):
        digest = hashlib.sha512(i.to_bytes(8, "little")).digest()[:size]
        entries.append(encode_ima_ng_entry(
            f"/usr/lib/x86_64-linux-gnu/lib{i % 997}/module-{i}.so", digest, alg, index=i))
    entries = entries[:count]
    return format_binary(entries) if binary else format_ascii(entries)


# --------------------------------------------------------------------------
# Field checks shared by both formats
# --------------------------------------------------------------------------

def _check_file_digest(alg: bytes, digest: bytes, what: str, offset: int) -> str:
    name = alg.decode("ascii", "replace")
    if name in _WEAK_FILE_DIGESTS:
        raise UnknownAlgorithmError(what, offset, f"file digest algorithm {name} is not accepted")
    size = _FILE_DIGEST_SIZES.get(name)
    if size is None:
        raise UnknownAlgorithmError(what, offset, f"unknown file digest algorithm {name[:32]!r}")
    if len(digest) != size:
        raise ParseError(what, offset, f"{name} file digest has {len(digest)} bytes, not {size}")
    return name


def _check_path(path: bytes, template: str, what: str, offset: int) -> None:
    if b"\0" in path:
        raise ParseError(what, offset, "file name contains a NUL byte")
    if template == "ima" and len(path) > _NAME_LEN_MAX:
        raise ParseError(what, offset, f"'ima' file name of {len(path)} bytes exceeds 255")


def _split_dng(field: bytes, what: str, offset: int) -> tuple[str, bytes]:
    """Decode a binary d-ng field ``alg ":" NUL digest``."""
    colon = field.find(b":\0")
    if colon < 0:
        raise ParseError(what, offset, "d-ng field has no 'alg:' NUL prefix")
    digest = field[colon + 2:]
    return _check_file_digest(field[:colon], digest, what, offset), digest


def _unhex(text: bytes, field: str, what: str, offset: int) -> bytes:
    try:
        return binascii.a2b_hex(text)
    except (binascii.Error, ValueError):
        shown = text[:16].decode("ascii", "replace")
        raise ParseError(what, offset, f"{field} is not hex ({shown!r})") from None


# --------------------------------------------------------------------------
# ASCII parsing
# --------------------------------------------------------------------------

def _ascii_pcr(text: bytes, what: str, offset: int) -> int:
    if not text.isdigit() or len(text) > 10 or int(text) > _PCR_MAX:
        raise ParseError(what, offset, f"PCR index {text[:12].decode('ascii', 'replace')!r} "
                                       "is not a number")
    return int(text)


def _ascii_template_fields(name: str, rest: bytes, what: str, offset: int
                           ) -> tuple[str, bytes, bytes, bytes | None]:
    """``(alg, digest, path, extra)`` from the template-specific ascii fields."""
    if name not in TEMPLATES:
        raise UnknownTemplateError(what, offset, f"unknown template {name[:32]!r}")
    digest_text, sep, tail = rest.partition(b" ")
    if not sep:
        raise ParseError(what, offset, "missing file name field")
    extra = None
    if name in ("ima-sig", "ima-buf"):
        tail, sep, extra_hex = tail.rpartition(b" ")
        if not sep:
            field = "signature" if name == "ima-sig" else "buffer"
            raise ParseError(what, offset, f"missing {field} field")
        extra = _unhex(extra_hex, "signature" if name == "ima-sig" else "buffer", what, offset)
    if name == "ima":
        digest = _unhex(digest_text, "file digest", what, offset)
        return _check_file_digest(b"sha1", digest, what, offset), digest, tail, None
    alg, sep, hex_digest = digest_text.partition(b":")
    if not sep:
        raise ParseError(what, offset, "file digest has no 'alg:' prefix")
    digest = _unhex(hex_digest, "file digest", what, offset)
    return _check_file_digest(alg, digest, what, offset), digest, tail, extra


def _decode_ascii_line(line: bytes, index: int, offset: int) -> ImaEntry:
    what = f"IMA measurement list line {index + 1}"
    body = line[1:] if line[:1] == b" " else line          # "%2d" pads PCRs 0-9
    parts = body.split(b" ", 3)
    if len(parts) < 4:
        raise ParseError(what, offset, f"expected PCR, template hash, template name and "
                                       f"template fields, found {len(parts)} fields")
    pcr = _ascii_pcr(parts[0], what, offset)
    template_hash = _unhex(parts[1], "template hash", what, offset)
    if len(template_hash) not in _TEMPLATE_HASH_ALGS:
        raise ParseError(what, offset, f"template hash of {len(template_hash)} bytes")
    name = parts[2].decode("ascii", "replace")
    alg, digest, path, extra = _ascii_template_fields(name, parts[3], what, offset)
    _check_path(path, name, what, offset)
    data = _template_data(name, alg, digest, path, extra)
    return ImaEntry(index, pcr, template_hash, name, data, alg, digest,
                    path.decode("utf-8", "surrogateescape"),
                    (extra or None) if name == "ima-sig" else None,
                    extra if name == "ima-buf" else None)


def _as_bytes(data: bytes | str) -> bytes:
    return data.encode("utf-8", "surrogateescape") if isinstance(data, str) else bytes(data)


def _ascii_lines(data: bytes, start: int) -> list[bytes]:
    lines = data[start:].split(b"\n")
    if lines[-1] == b"":
        lines.pop()                   # the final newline (or an empty tail)
    return lines


def parse_ascii(data: bytes | str, *, start: int = 0, first_index: int = 0) -> list[ImaEntry]:
    """Decode an ascii list, from byte ``start`` (entry ``first_index``) to the end."""
    data = _as_bytes(data)
    entries = []
    offset = start
    for i, line in enumerate(_ascii_lines(data, start)):
        entries.append(_decode_ascii_line(line, first_index + i, offset))
        offset += len(line) + 1
    return entries


# --------------------------------------------------------------------------
# Binary parsing
# --------------------------------------------------------------------------

def _binary_ng_fields(reader: Reader, name: str) -> tuple[str, bytes, bytes, bytes | None]:
    size = reader.u32le("template data length")
    if size > reader.remaining:
        raise reader.error(f"template data length {size} runs past the end "
                           f"({reader.remaining} bytes left)", reader.offset - 4)
    fields = reader.sub(size, reader.what)
    where = fields.offset
    alg, digest = _split_dng(fields.bytes(fields.u32le("d-ng length"), "d-ng field"),
                             reader.what, where)
    where = fields.offset
    name_field = fields.bytes(fields.u32le("n-ng length"), "n-ng field")
    if not name_field.endswith(b"\0"):
        raise ParseError(reader.what, where, "n-ng file name is not NUL-terminated")
    extra = None
    if name in ("ima-sig", "ima-buf"):
        extra = fields.bytes(fields.u32le(f"{name[4:]} length"), f"{name[4:]} field")
    fields.expect_end()
    return alg, digest, name_field[:-1], extra


def _binary_ima_fields(reader: Reader) -> tuple[str, bytes, bytes, None]:
    digest = reader.bytes(20, "file digest")
    where = reader.offset
    length = reader.u32le("file name length")
    if length > _NAME_LEN_MAX:
        raise ParseError(reader.what, where, f"'ima' file name length {length} exceeds 255")
    return "sha1", digest, reader.bytes(length, "file name"), None


def _decode_binary_entry(reader: Reader, index: int, hash_size: int) -> ImaEntry:
    start = reader.offset
    reader.what = f"IMA binary measurement list entry {index}"
    pcr = reader.u32le("PCR index")
    template_hash = reader.bytes(hash_size, "template hash")
    name_len = reader.u32le("template name length")
    if name_len > _TEMPLATE_NAME_MAX:
        raise reader.error(f"template name length {name_len} exceeds {_TEMPLATE_NAME_MAX}")
    name = reader.bytes(name_len, "template name").decode("ascii", "replace")
    if name not in TEMPLATES:
        raise UnknownTemplateError(reader.what, start, f"unknown template {name!r}")
    if name == "ima":
        alg, digest, path, extra = _binary_ima_fields(reader)
    else:
        alg, digest, path, extra = _binary_ng_fields(reader, name)
    _check_path(path, name, reader.what, start)
    data = _template_data(name, alg, digest, path, extra)
    return ImaEntry(index, pcr, template_hash, name, data, alg, digest,
                    path.decode("utf-8", "surrogateescape"),
                    (extra or None) if name == "ima-sig" else None,
                    extra if name == "ima-buf" else None)


def parse_binary(data: bytes, *, start: int = 0, first_index: int = 0,
                 template_hash_alg: HashAlg = HashAlg.SHA1) -> list[ImaEntry]:
    """Decode a little-endian binary list from byte ``start`` to the end."""
    reader = Reader(data, "IMA binary measurement list", start=start)
    entries = []
    while not reader.at_end():
        entries.append(_decode_binary_entry(reader, first_index + len(entries),
                                            template_hash_alg.digest_size))
    return entries


def is_binary_list(data: bytes) -> bool:
    """A binary list starts with a little-endian PCR index; ascii never holds NUL."""
    return b"\0" in data[:4]


def parse_ima_list(data: bytes) -> list[ImaEntry]:
    """Decode an ascii or binary list, whichever ``data`` is."""
    data = _as_bytes(data)
    return parse_binary(data) if is_binary_list(data) else parse_ascii(data)


# --------------------------------------------------------------------------
# Replay state
# --------------------------------------------------------------------------

def _state_error(problem: str) -> ReplayStateError:
    return ReplayStateError(f"IMA replay state: {problem}")


@dataclasses.dataclass(frozen=True)
class ImaReplayState:
    """PCR values after the first ``count`` entries, and where to resume.

    ``last_entry_offset`` is the byte offset of the last consumed entry in the
    list it came from (``None`` if unknown) and ``last_template_hash`` that
    entry's template hash: resuming re-reads that one entry to check that the
    list really continues the one the state was computed from.
    """

    count: int
    pcrs: Mapping[HashAlg, bytes]
    last_entry_offset: int | None = None
    last_template_hash: bytes | None = None

    def __post_init__(self) -> None:
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 0:
            raise _state_error(f"count {self.count!r} is not a non-negative integer")
        try:
            pcrs = {HashAlg(bank): value for bank, value in self.pcrs.items()}
        except (AttributeError, TypeError, ValueError):
            raise _state_error("'pcrs' must map hash algorithms to values") from None
        for bank, value in pcrs.items():
            if not isinstance(value, bytes) or len(value) != bank.digest_size:
                raise _state_error(f"{bank.bank_name} value is not {bank.digest_size} bytes")
        last_hash = self.last_template_hash
        if last_hash is not None and (not isinstance(last_hash, bytes)
                                      or len(last_hash) not in _TEMPLATE_HASH_ALGS):
            raise _state_error("last template hash is not a template hash")
        offset = self.last_entry_offset
        if offset is not None and (isinstance(offset, bool) or not isinstance(offset, int)
                                   or offset < 0 or self.count == 0):
            raise _state_error(f"last entry offset {offset!r} is not valid")
        object.__setattr__(self, "pcrs", types.MappingProxyType(pcrs))

    def pcr_values(self) -> dict[str, dict[str, str]]:
        """``{"sha256": {"10": hex}}``, the CLI's JSON output."""
        return {bank.bank_name: {str(IMA_PCR): value.hex()} for bank, value in self.pcrs.items()}

    def to_json(self) -> dict:
        return {"version": 1, "count": self.count,
                "pcrs": {bank.bank_name: value.hex() for bank, value in self.pcrs.items()},
                "last_entry_offset": self.last_entry_offset,
                "last_template_hash": (None if self.last_template_hash is None
                                       else self.last_template_hash.hex())}

    @classmethod
    def from_json(cls, obj: object) -> ImaReplayState:
        """Validate and decode :meth:`to_json` output; ReplayStateError if malformed."""
        if not isinstance(obj, dict) or obj.get("version") != 1:
            raise _state_error("not a version 1 state object")
        pcrs = obj.get("pcrs")
        if not isinstance(pcrs, dict) or not pcrs:
            raise _state_error("'pcrs' must be a non-empty object")
        try:
            values = {hash_alg_from_name(str(name)): bytes.fromhex(value)
                      for name, value in pcrs.items()}
            last = obj.get("last_template_hash")
            last_hash = None if last is None else bytes.fromhex(last)
        except (TypeError, ValueError) as exc:
            raise _state_error(f"bad PCR or template hash value ({exc})") from None
        return cls(obj.get("count"), values, obj.get("last_entry_offset"), last_hash)


def _start_pcrs(state: ImaReplayState | None, banks: Sequence[HashAlg]) -> dict[HashAlg, bytes]:
    unsupported = [HashAlg(bank).bank_name for bank in banks if bank not in _HASHLIB]
    if unsupported or not banks:
        raise UnknownAlgorithmError("IMA replay", 0, "banks must be some of sha1, sha256, "
                                    f"sha384, sha512 (got {unsupported or 'none'})")
    if state is None:
        return {bank: bytes(bank.digest_size) for bank in banks}
    missing = [bank.bank_name for bank in banks if bank not in state.pcrs]
    if missing:
        raise _state_error(f"no value for bank(s) {', '.join(missing)}")
    return {bank: state.pcrs[bank] for bank in banks}


def _unchanged(state: ImaReplayState | None, pcrs: dict[HashAlg, bytes]) -> ImaReplayState:
    """The state after replaying no new entries, for the requested banks."""
    if state is None:
        return ImaReplayState(0, pcrs)
    return ImaReplayState(state.count, pcrs, state.last_entry_offset, state.last_template_hash)


def _check_continuity(state: ImaReplayState, entry: ImaEntry | None) -> None:
    if entry is None:
        raise _state_error(f"it covers {state.count} entries; the list is shorter")
    if state.last_template_hash is not None and entry.template_hash != state.last_template_hash:
        raise _state_error(f"entry {entry.index} of this list is not the state's last entry")


# --------------------------------------------------------------------------
# Replay
# --------------------------------------------------------------------------

def _digest(bank: HashAlg, data: bytes) -> bytes:
    """``bank(data)``; direct hashlib constructors are twice as fast as hashlib.new."""
    constructor = _HASHLIB.get(bank)
    return bank.digest(data) if constructor is None else constructor(data).digest()


def _where(entry: ImaEntry, offset: int | None) -> str:
    place = f"line {entry.index + 1}" if offset is None else f"offset {offset}"
    return f"IMA entry {entry.index} ({place}, {entry.path[:120]!r})"


def _bank_digests(entry: ImaEntry, banks: Sequence[HashAlg], pcr: int,
                  offset: int | None = None) -> list[bytes]:
    """Verify ``entry``'s template hash; return its digest for each bank."""
    if entry.pcr != pcr:
        raise PcrIndexMismatch(f"{_where(entry, offset)} extends PCR {entry.pcr}, "
                               f"not the replayed PCR {pcr}")
    alg = _TEMPLATE_HASH_ALGS.get(len(entry.template_hash))
    if alg is None:
        raise EvidenceError(f"{_where(entry, offset)}: template hash of "
                            f"{len(entry.template_hash)} bytes")
    if entry.is_violation:
        return [b"\xff" * bank.digest_size for bank in banks]
    computed = _digest(alg, entry.template_data)
    if computed != entry.template_hash:
        raise TemplateHashMismatch(
            f"{_where(entry, offset)}: template hash {entry.template_hash.hex()} does not "
            f"match the template data ({computed.hex()})")
    return [computed if bank is alg else _digest(bank, entry.template_data) for bank in banks]


def _extend(pcrs: dict[HashAlg, bytes], banks: Sequence[HashAlg], digests: list[bytes]) -> None:
    for bank, digest in zip(banks, digests, strict=True):
        pcrs[bank] = _digest(bank, pcrs[bank] + digest)


def _replay_entries(entries: Iterable[ImaEntry], banks: Sequence[HashAlg],
                    pcrs: dict[HashAlg, bytes], pcr: int) -> ImaEntry | None:
    last = None
    for entry in entries:
        _extend(pcrs, banks, _bank_digests(entry, banks, pcr))
        last = entry
    return last


def replay(entries: Sequence[ImaEntry], banks: Sequence[HashAlg] = DEFAULT_BANKS,
           state: ImaReplayState | None = None, *, pcr: int = IMA_PCR) -> ImaReplayState:
    """Verify template hashes and replay ``pcr``; resume after ``state.count`` entries."""
    banks = tuple(banks)
    pcrs = _start_pcrs(state, banks)
    count = 0 if state is None else state.count
    if count:
        _check_continuity(state, entries[count - 1] if count <= len(entries) else None)
    last = _replay_entries(entries[count:], banks, pcrs, pcr)
    if last is None:
        return _unchanged(state, pcrs)
    return ImaReplayState(len(entries), pcrs, None, last.template_hash)


def _resume_binary(data: bytes, state: ImaReplayState, hash_size: int) -> int:
    """The offset after the state's last entry, checked against ``data``."""
    if state.last_entry_offset is None:
        reader, entry, index = Reader(data, "IMA binary measurement list"), None, 0
        while index < state.count and not reader.at_end():       # bounded by len(data)
            entry, index = _decode_binary_entry(reader, index, hash_size), index + 1
        _check_continuity(state, entry if index == state.count else None)
        return reader.offset
    reader = Reader(data, "IMA binary measurement list", start=state.last_entry_offset)
    try:
        entry = _decode_binary_entry(reader, state.count - 1, hash_size)
    except EvidenceError as exc:
        raise _state_error(f"no entry of this list at its offset ({exc})") from None
    _check_continuity(state, entry)
    return reader.offset


def _fast_binary_template(data: bytes, pos: int) -> tuple[bytes, bytes, int] | None:
    """``(template hash, template data, end)`` of a plain PCR 10 ima-ng entry, else None.

    Accepts a subset of :func:`_decode_binary_entry`; None sends the entry there.
    """
    pcr, thash, name_len = _BINARY_HEAD.unpack_from(data, pos)
    if pcr != IMA_PCR or name_len != 6 or data[pos + 28:pos + 34] != b"ima-ng":
        return None
    size = _U32.unpack_from(data, pos + 34)[0]
    end = pos + 38 + size
    template = data[pos + 38:end]
    d_len = _U32.unpack_from(template, 0)[0]
    n_start = 8 + d_len
    if len(template) != size or n_start + _U32.unpack_from(template, 4 + d_len)[0] != size:
        return None
    colon = template.find(b":\0", 4, 4 + d_len)
    spec = _DNG_PREFIXES.get(template[4:colon]) if colon >= 4 else None
    if (spec is None or colon + 2 + spec[1] != 4 + d_len
            or template.find(b"\0", n_start) != size - 1):
        return None
    return thash, template, end


def _replay_binary_fast(data: bytes, pos: int, pcrs: dict[HashAlg, bytes], count: int
                        ) -> tuple[int, int | None, bytes]:
    """Replay sha1 + sha256 from ``pos``; ``(count, last entry offset, last template hash)``."""
    sha1, sha256 = hashlib.sha1, hashlib.sha256
    p1, p256 = pcrs[HashAlg.SHA1], pcrs[HashAlg.SHA256]
    last_offset, thash = None, b""
    while pos < len(data):
        try:
            plain = _fast_binary_template(data, pos)
        except struct.error:
            plain = None
        if plain is not None and sha1(plain[1]).digest() == plain[0]:
            thash, template, end = plain
            p1 = sha1(p1 + thash).digest()
            p256 = sha256(p256 + sha256(template).digest()).digest()
        else:
            pcrs[HashAlg.SHA1], pcrs[HashAlg.SHA256] = p1, p256
            reader = Reader(data, "IMA binary measurement list", start=pos)
            entry = _decode_binary_entry(reader, count, HashAlg.SHA1.digest_size)
            _extend(pcrs, DEFAULT_BANKS, _bank_digests(entry, DEFAULT_BANKS, IMA_PCR, pos))
            p1, p256 = pcrs[HashAlg.SHA1], pcrs[HashAlg.SHA256]
            thash, end = entry.template_hash, reader.offset
        last_offset, pos, count = pos, end, count + 1
    pcrs[HashAlg.SHA1], pcrs[HashAlg.SHA256] = p1, p256
    return count, last_offset, thash


def _replay_binary_general(data: bytes, pos: int, banks: tuple[HashAlg, ...],
                           pcrs: dict[HashAlg, bytes], count: int, pcr: int,
                           hash_alg: HashAlg) -> tuple[int, int | None, bytes]:
    reader = Reader(data, "IMA binary measurement list", start=pos)
    last_offset, thash = None, b""
    while not reader.at_end():
        entry_offset = reader.offset
        entry = _decode_binary_entry(reader, count, hash_alg.digest_size)
        _extend(pcrs, banks, _bank_digests(entry, banks, pcr, entry_offset))
        last_offset, thash, count = entry_offset, entry.template_hash, count + 1
    return count, last_offset, thash


def replay_binary(data: bytes, banks: Sequence[HashAlg] = DEFAULT_BANKS,
                  state: ImaReplayState | None = None, *, pcr: int = IMA_PCR,
                  template_hash_alg: HashAlg = HashAlg.SHA1) -> ImaReplayState:
    """Replay a binary list, parsing only what follows ``state``'s last entry."""
    banks = tuple(banks)
    pcrs = _start_pcrs(state, banks)
    count = 0 if state is None else state.count
    start = _resume_binary(data, state, template_hash_alg.digest_size) if count else 0
    if banks == DEFAULT_BANKS and pcr == IMA_PCR and template_hash_alg is HashAlg.SHA1:
        new_count, last_offset, thash = _replay_binary_fast(data, start, pcrs, count)
    else:
        new_count, last_offset, thash = _replay_binary_general(
            data, start, banks, pcrs, count, pcr, template_hash_alg)
    if last_offset is None:
        return _unchanged(state, pcrs)
    return ImaReplayState(new_count, pcrs, last_offset, thash)


def _line_start(data: bytes, offset: int) -> bool:
    return offset == 0 or (0 < offset <= len(data) and data[offset - 1:offset] == b"\n")


def _skip_lines(data: bytes, count: int) -> tuple[int, int]:
    """``(start of line count-1, start of line count)``: an O(count) C-level scan."""
    last, pos = 0, 0
    for _ in range(count):
        newline = data.find(b"\n", pos)
        if newline < 0:
            if pos >= len(data):
                raise _state_error(f"it covers {count} entries; the list is shorter")
            newline = len(data)
        last, pos = pos, newline + 1
    return last, pos


def _resume_ascii(data: bytes, state: ImaReplayState) -> int:
    """The offset of the first line after ``state``'s last entry, checked against ``data``."""
    if state.last_entry_offset is None:
        last, start = _skip_lines(data, state.count)
    else:
        last = state.last_entry_offset
        if not _line_start(data, last) or last >= len(data):
            raise _state_error(f"offset {last} is not the start of a line of this list")
        end = data.find(b"\n", last)
        start = len(data) if end < 0 else end + 1
    line = data[last:start].rstrip(b"\n")
    try:
        entry = _decode_ascii_line(line, state.count - 1, last)
    except EvidenceError as exc:
        raise _state_error(f"no entry of this list at its offset ({exc})") from None
    _check_continuity(state, entry)
    return start


def _replay_line(line: bytes, index: int, offset: int, banks: Sequence[HashAlg],
                 pcrs: dict[HashAlg, bytes], pcr: int) -> bytes:
    """The general path for one ascii line; returns its template hash."""
    entry = _decode_ascii_line(line, index, offset)
    _extend(pcrs, banks, _bank_digests(entry, banks, pcr))
    return entry.template_hash


class _LineOffsets:
    """Byte offsets of lines, computed lazily so the hot loop never counts bytes.

    Calls must ask for non-decreasing line numbers, so the total cost stays O(n).
    """

    __slots__ = ("_index", "_lines", "_offset")

    def __init__(self, lines: list[bytes], start: int) -> None:
        self._lines, self._index, self._offset = lines, 0, start

    def __call__(self, index: int) -> int:
        self._offset += sum(map(len, self._lines[self._index:index])) + index - self._index
        self._index = index
        return self._offset


def _replay_ascii_lines(lines: list[bytes], banks: tuple[HashAlg, ...],
                        pcrs: dict[HashAlg, bytes], pcr: int, first_index: int,
                        offset_of: _LineOffsets) -> bytes:
    """Replay ascii lines into ``pcrs`` one decoded entry at a time; the last template hash."""
    thash = b""
    for i, line in enumerate(lines):
        thash = _replay_line(line, first_index + i, offset_of(i), banks, pcrs, pcr)
    return thash


def _replay_ascii_fast(lines: list[bytes], pcrs: dict[HashAlg, bytes], first_index: int,
                       offset_of: _LineOffsets) -> bytes:
    """:func:`_replay_ascii_lines` for NUL-free lines, the sha1 + sha256 banks and PCR 10.

    A plain ``10 <sha1> ima-ng alg:hex path`` line is hashed without building an
    ImaEntry: four hashlib calls and little else.  Any other line, or any doubt,
    goes through the general decoder, which accepts a superset of this path and
    raises the precise error.
    """
    sha1, sha256, unhex, u32, prefixes, join = (hashlib.sha1, hashlib.sha256, binascii.a2b_hex,
                                                _U32_CACHE, _DNG_PREFIXES, b"".join)
    p1, p256 = pcrs[HashAlg.SHA1], pcrs[HashAlg.SHA256]
    thash = b""
    for i, line in enumerate(lines):
        try:
            pcr_text, hash_hex, name, digest_text, path = line.split(b" ", 4)
            alg, _, digest_hex = digest_text.partition(b":")
            prefix, size = prefixes[alg]
            digest, thash = unhex(digest_hex), unhex(hash_hex)
            data = join((prefix, digest, u32[len(path) + 1], path, b"\0"))
        except (ValueError, KeyError, IndexError):
            pass
        else:
            if len(digest) == size and name == b"ima-ng" and pcr_text == b"10":
                digest1 = sha1(data).digest()
                if digest1 == thash:
                    p1 = sha1(p1 + digest1).digest()
                    p256 = sha256(p256 + sha256(data).digest()).digest()
                    continue
        pcrs[HashAlg.SHA1], pcrs[HashAlg.SHA256] = p1, p256
        thash = _replay_line(line, first_index + i, offset_of(i), DEFAULT_BANKS, pcrs, IMA_PCR)
        p1, p256 = pcrs[HashAlg.SHA1], pcrs[HashAlg.SHA256]
    pcrs[HashAlg.SHA1], pcrs[HashAlg.SHA256] = p1, p256
    return thash


def replay_ascii(data: bytes | str, banks: Sequence[HashAlg] = DEFAULT_BANKS,
                 state: ImaReplayState | None = None, *, pcr: int = IMA_PCR) -> ImaReplayState:
    """Verify and replay an ascii list without building entries; resume after ``state``.

    With a state that records its last entry's offset, only the lines after
    it are read: the cost is that of the new entries, not of the whole list.
    """
    data, banks = _as_bytes(data), tuple(banks)
    pcrs = _start_pcrs(state, banks)
    count = 0 if state is None else state.count
    start = _resume_ascii(data, state) if count else 0
    lines = _ascii_lines(data, start)
    if not lines:
        return _unchanged(state, pcrs)
    offset_of = _LineOffsets(lines, start)
    if banks == DEFAULT_BANKS and pcr == IMA_PCR and data.find(b"\0", start) < 0:
        last_hash = _replay_ascii_fast(lines, pcrs, count, offset_of)
    else:
        last_hash = _replay_ascii_lines(lines, banks, pcrs, pcr, count, offset_of)
    return ImaReplayState(count + len(lines), pcrs, offset_of(len(lines) - 1), last_hash)


def replay_ima_list(data: bytes | str, banks: Sequence[HashAlg] = DEFAULT_BANKS,
                    state: ImaReplayState | None = None, *, pcr: int = IMA_PCR) -> ImaReplayState:
    """Replay an ascii or binary list (autodetected), resuming after ``state``."""
    data = _as_bytes(data)
    if is_binary_list(data):
        return replay_binary(data, banks, state, pcr=pcr)
    return replay_ascii(data, banks, state, pcr=pcr)
