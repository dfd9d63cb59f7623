"""Quote evidence in go-attestation's JSON layout (as in its testdata files)."""

from __future__ import annotations

import base64
import binascii
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field

from trusted_launch.evidence.algorithms import HashAlg
from trusted_launch.evidence.errors import ParseError
from trusted_launch.evidence.tpm2.attest import TPM_GENERATED_VALUE
from trusted_launch.evidence.tpm2.public import PublicArea, parse_public

# go-attestation stores Go's crypto.Hash values, not TPM_ALG_IDs.
_GO_HASHES = {3: HashAlg.SHA1, 5: HashAlg.SHA256, 6: HashAlg.SHA384, 7: HashAlg.SHA512}


@dataclass(frozen=True)
class QuoteEvidence:
    """An AK public area, one quote with its signature, and the claimed PCRs."""

    ak_public: PublicArea
    quote: bytes        # TPMS_ATTEST, no size prefix
    signature: bytes    # TPMT_SIGNATURE
    nonce: bytes
    pcr_values: dict[HashAlg, dict[int, bytes]]
    event_log: bytes = field(default=b"", repr=False)


def load_go_attestation(document: Mapping) -> QuoteEvidence:
    """Decode ``{"AK": {"Public"}, "Quote": {...}, "Log": {"PCRs", "Raw"}}``."""
    ak = _section(document, "AK")
    quote = _section(document, "Quote")
    log = _section(document, "Log")
    public = _b64(ak, "AK", "Public")
    return QuoteEvidence(
        ak_public=parse_public(public, tpm2b=_has_size_prefix(public)),
        quote=_strip_attest_prefix(_b64(quote, "Quote", "Quote")),
        signature=_b64(quote, "Quote", "Signature"),
        nonce=_b64(quote, "Quote", "Nonce", optional=True),
        pcr_values=_pcr_values(log.get("PCRs")),
        event_log=_b64(log, "Log", "Raw", optional=True))


def _fail(problem: str) -> ParseError:
    return ParseError("go-attestation JSON", 0, problem)


def _section(document: Mapping, key: str) -> Mapping:
    value = document.get(key) if isinstance(document, Mapping) else None
    if not isinstance(value, Mapping):
        raise _fail(f"missing object {key!r}")
    return value


def _b64(section: Mapping, where: str, key: str, *, optional: bool = False) -> bytes:
    value = section.get(key)
    if value is None and optional:
        return b""
    if not isinstance(value, str):
        raise _fail(f"{where}.{key} is missing or not a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _fail(f"{where}.{key} is not valid base64") from None


def _has_size_prefix(data: bytes) -> bool:
    return len(data) >= 2 and struct.unpack(">H", data[:2])[0] == len(data) - 2


def _strip_attest_prefix(data: bytes) -> bytes:
    """Accept a TPM2B_ATTEST too: the signed bytes are the TPMS_ATTEST inside."""
    if len(data) >= 6 and struct.unpack(">I", data[2:6])[0] == TPM_GENERATED_VALUE \
            and _has_size_prefix(data):
        return data[2:]
    return data


def _pcr_values(entries: object) -> dict[HashAlg, dict[int, bytes]]:
    if not isinstance(entries, list):
        raise _fail("Log.PCRs is missing or not a list")
    values: dict[HashAlg, dict[int, bytes]] = {}
    for position, entry in enumerate(entries):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("Index"), int) \
                or entry.get("DigestAlg") not in _GO_HASHES:
            raise _fail(f"Log.PCRs[{position}] needs an integer Index and a DigestAlg "
                        f"in {sorted(_GO_HASHES)}")
        alg = _GO_HASHES[entry["DigestAlg"]]
        bank = values.setdefault(alg, {})
        if entry["Index"] in bank:
            raise _fail(f"Log.PCRs[{position}] repeats PCR {alg.bank_name}:{entry['Index']}")
        bank[entry["Index"]] = _b64(entry, f"Log.PCRs[{position}]", "Digest")
    return values
