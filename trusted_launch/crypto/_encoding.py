"""Small encoding helpers shared by the crypto modules."""

from __future__ import annotations

import base64
import binascii
import re
import struct


def length_prefixed(*parts: bytes) -> bytes:
    """Concatenate ``parts``, each preceded by its length as a big-endian u16."""
    out = bytearray()
    for part in parts:
        if len(part) > 0xFFFF:
            raise ValueError(f"field of {len(part)} bytes is too long to length-prefix")
        out += struct.pack(">H", len(part)) + part
    return bytes(out)


def b64url_encode(data: bytes) -> str:
    """URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Decode URL-safe base64 with or without padding; ValueError on bad input."""
    if not isinstance(text, str) or not text.isascii():
        raise ValueError("not an ASCII string")
    stripped = text.rstrip("=")
    if len(stripped) % 4 == 1:
        raise ValueError("impossible base64 length")
    if not _B64URL_RE.fullmatch(stripped):
        raise ValueError("character outside the base64url alphabet")
    try:
        return base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("invalid base64url") from None


_B64URL_RE = re.compile(r"[A-Za-z0-9_-]*")
