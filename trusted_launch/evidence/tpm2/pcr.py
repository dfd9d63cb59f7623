"""TPML_PCR_SELECTION and PCR composite digests."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from trusted_launch.evidence.algorithms import HashAlg, hash_alg_from_id, hash_alg_from_name
from trusted_launch.evidence.binary import Reader
from trusted_launch.evidence.errors import EvidenceError, MissingPCRValue, ParseError

PCRValues = Mapping[HashAlg, Mapping[int, bytes]]

HASH_COUNT_MAX = 16      # TPML_PCR_SELECTION.count bound (one entry per bank)
SIZEOF_SELECT_MIN = 3    # PCR_SELECT_MIN for a 24-PCR PC Client TPM
SIZEOF_SELECT_MAX = 32   # 256 PCRs: far more than any TPM implements
_DRTM_PCRS = range(17, 23)  # reset to all-ones until a dynamic launch


@dataclass(frozen=True)
class PCRSelection:
    """Selected PCRs per bank, in the order the TPM hashes them.

    ``raw`` holds the marshalled bytes when parsed (empty when built here);
    ``len()`` counts the selected PCRs over all banks.
    """

    banks: tuple[tuple[HashAlg, tuple[int, ...]], ...]
    raw: bytes = field(default=b"", compare=False, repr=False)

    def __iter__(self) -> Iterator[tuple[HashAlg, tuple[int, ...]]]:
        return iter(self.banks)

    def __len__(self) -> int:
        return sum(len(pcrs) for _, pcrs in self.banks)

    @classmethod
    def of(cls, banks: Mapping[HashAlg, Iterable[int]]) -> PCRSelection:
        """Build from ``{HashAlg.SHA256: [0, 1, 2]}`` (PCRs sorted, deduplicated)."""
        selection = cls(tuple((HashAlg(alg), tuple(sorted(set(pcrs))))
                              for alg, pcrs in banks.items()))
        for alg, pcrs in selection.banks:
            if pcrs and not 0 <= pcrs[0] <= pcrs[-1] < SIZEOF_SELECT_MAX * 8:
                raise EvidenceError(f"PCR indexes of bank {alg.bank_name} must be "
                                    f"0..{SIZEOF_SELECT_MAX * 8 - 1}")
        return selection

    @classmethod
    def from_spec(cls, spec: str) -> PCRSelection:
        """Parse ``sha256:0,1,2+sha1:0`` (tpm2-tools syntax; ranges like ``0-7`` too)."""
        banks: dict[HashAlg, list[int]] = {}
        for part in spec.split("+"):
            name, sep, indexes = part.strip().partition(":")
            if not sep or not indexes:
                raise ParseError("PCR selection", 0, f"{part!r} is not bank:i,j,...")
            alg = hash_alg_from_name(name)
            if alg in banks:
                raise ParseError("PCR selection", 0, f"bank {name} listed twice")
            banks[alg] = [index for text in indexes.split(",") for index in _pcr_indexes(text)]
        return cls.of(banks)

    def __str__(self) -> str:
        return "+".join(f"{alg.bank_name}:{','.join(map(str, pcrs))}"
                        for alg, pcrs in self.banks)


def _pcr_indexes(text: str) -> range:
    first, dash, last = text.partition("-")
    if not dash:
        return range(_pcr_index(first), _pcr_index(first) + 1)
    low, high = _pcr_index(first), _pcr_index(last)
    if low > high:
        raise ParseError("PCR selection", 0, f"{text.strip()!r} is an empty range")
    return range(low, high + 1)


def _pcr_index(text: str) -> int:
    text = text.strip()
    if not (text.isascii() and text.isdigit()) or int(text) >= SIZEOF_SELECT_MAX * 8:
        raise ParseError("PCR selection", 0, f"{text!r} is not a PCR index")
    return int(text)


def read_pcr_selection(reader: Reader) -> PCRSelection:
    """Read a TPML_PCR_SELECTION at the reader's position."""
    start = reader.offset
    count = reader.u32be("TPML_PCR_SELECTION.count")
    if count > HASH_COUNT_MAX:
        raise reader.error(f"TPML_PCR_SELECTION.count {count} exceeds {HASH_COUNT_MAX}", start)
    banks = []
    raw = [struct.pack(">I", count)]
    seen: set[HashAlg] = set()
    for _ in range(count):
        alg_offset = reader.offset
        alg = hash_alg_from_id(reader.u16be("TPMS_PCR_SELECTION.hash"),
                               what=reader.what, offset=alg_offset)
        if alg in seen:
            raise reader.error(f"bank {alg.bank_name} selected twice", alg_offset)
        seen.add(alg)
        size = reader.u8("sizeofSelect")
        if size > SIZEOF_SELECT_MAX:
            raise reader.error(f"sizeofSelect {size} exceeds {SIZEOF_SELECT_MAX}",
                               reader.offset - 1)
        bitmap = reader.bytes(size, "pcrSelect")
        raw.append(struct.pack(">HB", alg, size) + bitmap)
        banks.append((alg, tuple(i for i in range(size * 8) if bitmap[i // 8] >> (i % 8) & 1)))
    return PCRSelection(tuple(banks), b"".join(raw))


def parse_pcr_selection(data: bytes) -> PCRSelection:
    """Unmarshal a complete TPML_PCR_SELECTION (no trailing bytes)."""
    reader = Reader(data, "TPML_PCR_SELECTION")
    selection = read_pcr_selection(reader)
    reader.expect_end()
    return selection


def marshal_pcr_selection(selection: PCRSelection) -> bytes:
    """Marshal as a TPML_PCR_SELECTION (sizeofSelect at least 3, like the TSS)."""
    out = [struct.pack(">I", len(selection.banks))]
    for alg, pcrs in selection.banks:
        size = max(SIZEOF_SELECT_MIN, (max(pcrs, default=0) // 8) + 1)
        bitmap = bytearray(size)
        for index in pcrs:
            bitmap[index // 8] |= 1 << (index % 8)
        out.append(struct.pack(">HB", alg, size) + bytes(bitmap))
    return b"".join(out)


def selected_pcr_values(selection: PCRSelection, pcr_values: PCRValues) -> bytes:
    """Concatenate the selected PCR values: banks in list order, PCRs ascending."""
    parts = []
    for alg, pcrs in selection.banks:
        bank = pcr_values.get(alg, {})
        for index in pcrs:
            value = bank.get(index)
            if value is None:
                raise MissingPCRValue(f"no value for selected PCR {alg.bank_name}:{index}")
            if len(value) != alg.digest_size:
                raise MissingPCRValue(
                    f"PCR {alg.bank_name}:{index} value has {len(value)} bytes, "
                    f"expected {alg.digest_size}")
            parts.append(bytes(value))
    return b"".join(parts)


def pcr_digest(selection: PCRSelection, pcr_values: PCRValues, hash_alg: HashAlg) -> bytes:
    """H(concatenated selected PCR values), as in TPMS_QUOTE_INFO.pcrDigest."""
    return hash_alg.digest(selected_pcr_values(selection, pcr_values))


def initial_pcr_value(index: int, hash_alg: HashAlg) -> bytes:
    """The value a PC Client PCR holds before any extend (DRTM PCRs 17-22: all ones)."""
    fill = b"\xff" if index in _DRTM_PCRS else b"\x00"
    return fill * hash_alg.digest_size


def with_initial_values(selection: PCRSelection, pcr_values: PCRValues
                        ) -> dict[HashAlg, dict[int, bytes]]:
    """``pcr_values`` with every selected PCR it lacks set to its initial value.

    An event log only records the PCRs that firmware extended; the rest of a
    quote's selection still holds its reset value.
    """
    filled = {alg: dict(bank) for alg, bank in pcr_values.items()}
    for alg, pcrs in selection.banks:
        bank = filled.setdefault(alg, {})
        for index in pcrs:
            bank.setdefault(index, initial_pcr_value(index, alg))
    return filled
