"""Image digests: the H of the protocol, computed by streaming the image bytes.

:func:`digest_stream` reads into one reusable buffer (``readinto`` +
``memoryview``) in large chunks; ``hashlib`` releases the GIL for them, so the
speed is close to ``sha512sum``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import BinaryIO

from trusted_launch.crypto.errors import InvalidImageDigest

DIGEST_SIZES = {"sha256": 32, "sha512": 64}
DEFAULT_ALGORITHM = "sha512"
CHUNK_SIZE = 4 * 1024 * 1024


@dataclass(frozen=True)
class ImageDigest:
    """A digest of VM image bytes, written ``sha512:<hex>``."""

    algorithm: str
    value: bytes

    def __post_init__(self) -> None:
        expected = DIGEST_SIZES.get(self.algorithm)
        if expected is None:
            raise InvalidImageDigest(
                f"image digest algorithm {self.algorithm!r} is not one of "
                f"{', '.join(sorted(DIGEST_SIZES))}")
        if not isinstance(self.value, bytes) or len(self.value) != expected:
            size = len(self.value) if isinstance(self.value, bytes) else "non-bytes"
            raise InvalidImageDigest(
                f"{self.algorithm} image digest must be {expected} bytes, got {size}")

    @classmethod
    def parse(cls, text: str) -> ImageDigest:
        """Parse ``sha256:HEX`` or ``sha512:HEX`` (algorithm case-insensitive)."""
        algorithm, sep, hex_value = text.strip().partition(":")
        if not sep:
            raise InvalidImageDigest("image digest must look like 'sha512:<hex>'")
        try:
            value = bytes.fromhex(hex_value)
        except ValueError:
            raise InvalidImageDigest("image digest value is not hexadecimal") from None
        return cls(algorithm.lower(), value)

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.value.hex()}"


def digest_stream(fileobj: BinaryIO, algorithm: str = DEFAULT_ALGORITHM, *,
                  chunk_size: int = CHUNK_SIZE) -> ImageDigest:
    """Digest everything left in ``fileobj`` (a binary file or stream)."""
    hasher = _new_hasher(algorithm)
    buffer = bytearray(chunk_size)
    view = memoryview(buffer)
    readinto = getattr(fileobj, "readinto", None)
    while True:
        if readinto is not None:
            count = readinto(view)
            if not count:
                break
            hasher.update(view[:count])
        else:
            chunk = fileobj.read(chunk_size)
            if not chunk:
                break
            hasher.update(chunk)
    return ImageDigest(algorithm, hasher.digest())


def digest_file(path: str | os.PathLike, algorithm: str = DEFAULT_ALGORITHM) -> ImageDigest:
    """Digest the file at ``path``."""
    with open(path, "rb", buffering=0) as fileobj:
        _advise_sequential(fileobj.fileno())
        return digest_stream(fileobj, algorithm)


def _new_hasher(algorithm: str):
    if algorithm not in DIGEST_SIZES:
        raise InvalidImageDigest(
            f"image digest algorithm {algorithm!r} is not one of {', '.join(sorted(DIGEST_SIZES))}")
    return hashlib.new(algorithm)


def _advise_sequential(fd: int) -> None:
    advise = getattr(os, "posix_fadvise", None)
    if advise is not None:
        try:
            advise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        except OSError:
            pass
