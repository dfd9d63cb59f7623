"""TPMS_ATTEST: the structure a TPM signs for TPM2_Quote, TPM2_Certify and friends."""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

from trusted_launch.evidence.algorithms import HashAlg
from trusted_launch.evidence.binary import Reader
from trusted_launch.evidence.tpm2.pcr import PCRSelection, read_pcr_selection

TPM_GENERATED_VALUE = 0xFF544347
_MAX_NAME = 2 + 64     # sizeof(TPMU_NAME): hash id + largest digest
_MAX_DATA = 2 + 64     # sizeof(TPMT_HA)
_MAX_DIGEST = 64       # sizeof(TPMU_HA)


class AttestType(enum.IntEnum):
    """TPMI_ST_ATTEST."""

    NV_DIGEST = 0x801C
    NV = 0x8014
    COMMAND_AUDIT = 0x8015
    SESSION_AUDIT = 0x8016
    CERTIFY = 0x8017
    QUOTE = 0x8018
    TIME = 0x8019
    CREATION = 0x801A


@dataclass(frozen=True)
class ClockInfo:
    clock: int
    reset_count: int
    restart_count: int
    safe: bool


@dataclass(frozen=True)
class CertifyInfo:
    """TPMS_CERTIFY_INFO: the certified object's Name and qualified Name."""

    name: bytes
    qualified_name: bytes


@dataclass(frozen=True)
class QuoteInfo:
    """TPMS_QUOTE_INFO: which PCRs were quoted and the digest of their values."""

    pcr_select: PCRSelection
    pcr_digest: bytes


@dataclass(frozen=True)
class CreationInfo:
    """TPMS_CREATION_INFO: a created object's Name and creation data hash."""

    object_name: bytes
    creation_hash: bytes


Attested = CertifyInfo | QuoteInfo | CreationInfo


@dataclass(frozen=True)
class Attest:
    """A decoded TPMS_ATTEST; ``raw`` is the signed bytes (no size prefix)."""

    type: AttestType
    qualified_signer: bytes
    extra_data: bytes
    clock_info: ClockInfo
    firmware_version: int
    attested: Attested
    raw: bytes = field(repr=False)
    magic: int = TPM_GENERATED_VALUE


def parse_attest(data: bytes, *, tpm2b: bool = False) -> Attest:
    """Unmarshal a TPMS_ATTEST, or a TPM2B_ATTEST when ``tpm2b`` is true."""
    if not tpm2b:
        return _read_attest(Reader(data, "TPMS_ATTEST"), data)
    outer = Reader(data, "TPM2B_ATTEST")
    size = outer.u16be("TPM2B_ATTEST.size")
    attest = _read_attest(outer.sub(size, "TPM2B_ATTEST"), data)
    outer.expect_end()
    return attest


def _read_attest(reader: Reader, data: bytes) -> Attest:
    start = reader.offset
    magic = reader.u32be("magic")
    if magic != TPM_GENERATED_VALUE:
        raise reader.error(f"magic 0x{magic:08x} is not TPM_GENERATED_VALUE "
                           f"0x{TPM_GENERATED_VALUE:08x}", start)
    attest_type = _read_type(reader)
    signer = read_name(reader, "qualifiedSigner")
    extra_data = _read_limited(reader, "extraData", _MAX_DATA)
    clock_info = _read_clock_info(reader)
    firmware_version = reader.u64be("firmwareVersion")
    attested = _ATTESTED_READERS[attest_type](reader)
    end = reader.offset
    reader.expect_end()
    return Attest(attest_type, signer, extra_data, clock_info, firmware_version, attested,
                  bytes(data[start:end]))


def _read_type(reader: Reader) -> AttestType:
    offset = reader.offset
    value = reader.u16be("type")
    if value not in AttestType._value2member_map_:
        raise reader.error(f"type 0x{value:04x} is not a TPMI_ST_ATTEST", offset)
    attest_type = AttestType(value)
    if attest_type not in _ATTESTED_READERS:
        raise reader.error(f"attestation type {attest_type.name} (0x{value:04x}) "
                           "is not supported", offset)
    return attest_type


def _read_limited(reader: Reader, field_name: str, limit: int) -> bytes:
    offset = reader.offset
    value = reader.tpm2b(field_name)
    if len(value) > limit:
        raise reader.error(f"{field_name} size {len(value)} exceeds {limit}", offset)
    return value


def read_name(reader: Reader, field_name: str) -> bytes:
    """A TPM2B_NAME: empty, a 4-byte handle, or hash id || digest of that hash."""
    offset = reader.offset
    name = _read_limited(reader, field_name, _MAX_NAME)
    if len(name) in (0, 4):
        return name
    alg_id = struct.unpack(">H", name[:2])[0] if len(name) >= 2 else None
    if alg_id not in HashAlg._value2member_map_ or len(name) != 2 + HashAlg(alg_id).digest_size:
        raise reader.error(f"{field_name} of {len(name)} bytes is neither a handle nor "
                           "a hash id followed by a digest of that hash", offset)
    return name


def _read_clock_info(reader: Reader) -> ClockInfo:
    clock = reader.u64be("clockInfo.clock")
    reset_count = reader.u32be("clockInfo.resetCount")
    restart_count = reader.u32be("clockInfo.restartCount")
    offset = reader.offset
    safe = reader.u8("clockInfo.safe")
    if safe > 1:
        raise reader.error(f"clockInfo.safe is {safe}, not YES (1) or NO (0)", offset)
    return ClockInfo(clock, reset_count, restart_count, bool(safe))


def _read_certify(reader: Reader) -> CertifyInfo:
    return CertifyInfo(read_name(reader, "certify.name"),
                       read_name(reader, "certify.qualifiedName"))


def _read_quote(reader: Reader) -> QuoteInfo:
    selection = read_pcr_selection(reader)
    return QuoteInfo(selection, _read_limited(reader, "quote.pcrDigest", _MAX_DIGEST))


def _read_creation(reader: Reader) -> CreationInfo:
    return CreationInfo(read_name(reader, "creation.objectName"),
                        _read_limited(reader, "creation.creationHash", _MAX_DIGEST))


_ATTESTED_READERS = {
    AttestType.CERTIFY: _read_certify,
    AttestType.QUOTE: _read_quote,
    AttestType.CREATION: _read_creation,
}
