"""TPM 2.0 hash algorithm identifiers (TPM_ALG_ID) and their properties."""

from __future__ import annotations

import enum
import hashlib

from trusted_launch.evidence.errors import UnknownAlgorithmError


class HashAlg(enum.IntEnum):
    """Hash algorithms a TPM bank or a TCG event log may use."""

    SHA1 = 0x0004
    SHA256 = 0x000B
    SHA384 = 0x000C
    SHA512 = 0x000D
    SM3_256 = 0x0012

    @property
    def bank_name(self) -> str:
        """Lower-case name used for PCR banks and JSON output (``sha256``)."""
        return self.name.lower()

    @property
    def digest_size(self) -> int:
        return _DIGEST_SIZES[self]

    def new(self, data: bytes = b""):
        """A new hashlib object for this algorithm."""
        if self is HashAlg.SM3_256:
            return hashlib.new("sm3", data)
        return hashlib.new(self.bank_name, data)

    def digest(self, data: bytes) -> bytes:
        return self.new(data).digest()


_DIGEST_SIZES = {
    HashAlg.SHA1: 20,
    HashAlg.SHA256: 32,
    HashAlg.SHA384: 48,
    HashAlg.SHA512: 64,
    HashAlg.SM3_256: 32,
}


def hash_alg_from_id(alg_id: int, *, what: str = "structure", offset: int = 0) -> HashAlg:
    """Map a TPM_ALG_ID to :class:`HashAlg`, or raise UnknownAlgorithmError."""
    try:
        return HashAlg(alg_id)
    except ValueError:
        raise UnknownAlgorithmError(
            what, offset, f"unknown hash algorithm id 0x{alg_id:04x}") from None


_NAME_ALIASES = {"sm3": HashAlg.SM3_256}


def hash_alg_from_name(name: str) -> HashAlg:
    """Map ``sha256`` (any case, ``sha-256`` too) to :class:`HashAlg`."""
    key = name.lower().replace("-", "")
    if key in _NAME_ALIASES:
        return _NAME_ALIASES[key]
    try:
        return HashAlg[key.upper()]
    except KeyError:
        raise UnknownAlgorithmError(
            "algorithm name", 0, f"unknown hash algorithm {name!r}") from None
