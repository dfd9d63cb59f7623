"""TPM_ALG_ID values used by the TPM 2.0 structures this package decodes."""

from __future__ import annotations

import enum
from collections.abc import Collection

from trusted_launch.evidence.algorithms import HashAlg, hash_alg_from_id
from trusted_launch.evidence.binary import Reader
from trusted_launch.evidence.errors import UnknownAlgorithmError


class TPMAlg(enum.IntEnum):
    """TPM_ALG_ID (TPM 2.0 Part 2, table 9), the subset that matters here."""

    RSA = 0x0001
    SHA1 = 0x0004
    HMAC = 0x0005
    AES = 0x0006
    MGF1 = 0x0007
    KEYEDHASH = 0x0008
    XOR = 0x000A
    SHA256 = 0x000B
    SHA384 = 0x000C
    SHA512 = 0x000D
    NULL = 0x0010
    SM3_256 = 0x0012
    SM4 = 0x0013
    RSASSA = 0x0014
    RSAES = 0x0015
    RSAPSS = 0x0016
    OAEP = 0x0017
    ECDSA = 0x0018
    ECDH = 0x0019
    ECDAA = 0x001A
    SM2 = 0x001B
    ECSCHNORR = 0x001C
    ECMQV = 0x001D
    KDF1_SP800_56A = 0x0020
    KDF2 = 0x0021
    KDF1_SP800_108 = 0x0022
    ECC = 0x0023
    SYMCIPHER = 0x0025
    CAMELLIA = 0x0026
    CTR = 0x0040
    OFB = 0x0041
    CBC = 0x0042
    CFB = 0x0043
    ECB = 0x0044


def read_alg(reader: Reader, field: str, allowed: Collection[TPMAlg]) -> TPMAlg:
    """Read a TPM_ALG_ID that must be one of ``allowed``."""
    offset = reader.offset
    value = reader.u16be(field)
    if value not in allowed:
        known = TPMAlg(value).name if value in TPMAlg._value2member_map_ else "unknown"
        raise UnknownAlgorithmError(
            reader.what, offset, f"{field} 0x{value:04x} ({known}) is not allowed here")
    return TPMAlg(value)


def read_hash_alg(reader: Reader, field: str) -> HashAlg:
    """Read a TPMI_ALG_HASH (TPM_ALG_NULL is rejected)."""
    offset = reader.offset
    return hash_alg_from_id(reader.u16be(field), what=reader.what, offset=offset)
