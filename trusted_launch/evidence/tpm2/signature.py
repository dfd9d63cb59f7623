"""TPMT_SIGNATURE: RSASSA, RSAPSS and ECDSA signatures."""

from __future__ import annotations

from dataclasses import dataclass, field

from trusted_launch.evidence.algorithms import HashAlg
from trusted_launch.evidence.binary import Reader
from trusted_launch.evidence.tpm2.algs import TPMAlg, read_alg, read_hash_alg

SIGNATURE_ALGORITHMS = (TPMAlg.RSASSA, TPMAlg.RSAPSS, TPMAlg.ECDSA)
_MAX_RSA_SIGNATURE = 512   # 4096-bit keys
_MAX_ECC_COORDINATE = 66   # P-521


@dataclass(frozen=True)
class Signature:
    """A decoded TPMT_SIGNATURE; ``raw`` is its marshalled bytes."""

    algorithm: TPMAlg
    hash_alg: HashAlg
    signature: bytes = b""   # RSASSA / RSAPSS
    r: bytes = b""           # ECDSA
    s: bytes = b""
    raw: bytes = field(default=b"", repr=False)


def parse_signature(data: bytes) -> Signature:
    """Unmarshal a complete TPMT_SIGNATURE (no trailing bytes allowed)."""
    reader = Reader(data, "TPMT_SIGNATURE")
    algorithm = read_alg(reader, "sigAlg", SIGNATURE_ALGORITHMS)
    hash_alg = read_hash_alg(reader, "signature hashAlg")
    if algorithm is TPMAlg.ECDSA:
        r = _read_bounded(reader, "signatureR", _MAX_ECC_COORDINATE)
        s = _read_bounded(reader, "signatureS", _MAX_ECC_COORDINATE)
        result = Signature(algorithm, hash_alg, r=r, s=s, raw=bytes(data))
    else:
        sig = _read_bounded(reader, "sig", _MAX_RSA_SIGNATURE)
        result = Signature(algorithm, hash_alg, signature=sig, raw=bytes(data))
    reader.expect_end()
    return result


def _read_bounded(reader: Reader, field_name: str, limit: int) -> bytes:
    offset = reader.offset
    value = reader.tpm2b(field_name)
    if not value or len(value) > limit:
        raise reader.error(f"{field_name} has {len(value)} bytes (1..{limit} allowed)", offset)
    return value
