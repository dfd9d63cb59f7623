"""The on-disk form of the launch nonce N.

Writers use 64 lower-case hex characters and a newline; readers also accept
the raw 32 bytes and base64 (standard or URL-safe, padded or not), which are
told apart by their length.
"""

from __future__ import annotations

import base64
import binascii
import os

from trusted_launch.crypto.errors import InvalidNonce

NONCE_SIZE = 32
MAX_NONCE_FILE_SIZE = 256


def encode_nonce(nonce: bytes) -> bytes:
    """The file content for ``nonce``."""
    if len(nonce) != NONCE_SIZE:
        raise InvalidNonce(f"a nonce must be {NONCE_SIZE} bytes")
    return nonce.hex().encode("ascii") + b"\n"


def decode_nonce(data: bytes) -> bytes:
    """The 32-byte nonce in ``data`` (raw, hex or base64); InvalidNonce otherwise."""
    if len(data) == NONCE_SIZE:
        return bytes(data)
    text = data.strip()
    try:
        if len(text) == 2 * NONCE_SIZE:
            return binascii.unhexlify(text)
        if len(text) in (43, 44):
            padded = text.rstrip(b"=") + b"="
            decoded = base64.b64decode(padded.replace(b"-", b"+").replace(b"_", b"/"),
                                       validate=True)
            if len(decoded) == NONCE_SIZE:
                return decoded
    except (binascii.Error, ValueError):
        pass
    raise InvalidNonce(
        f"nonce data of {len(data)} bytes is not 32 raw bytes, 64 hex characters or base64")


def read_nonce_file(path: str | os.PathLike) -> bytes:
    """Read the nonce from ``path``; InvalidNonce names the file, never the content."""
    with open(path, "rb") as fileobj:
        data = fileobj.read(MAX_NONCE_FILE_SIZE + 1)
    if len(data) > MAX_NONCE_FILE_SIZE:
        raise InvalidNonce(f"nonce file {path} is larger than {MAX_NONCE_FILE_SIZE} bytes")
    try:
        return decode_nonce(data)
    except InvalidNonce as exc:
        raise InvalidNonce(f"nonce file {path}: {exc}") from None
