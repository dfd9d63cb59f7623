"""A bounds-checked reader for little- and big-endian binary structures.

Every read either returns exactly what was asked for or raises
:class:`ParseError` naming the structure, the offset and the shortfall, so
parsers built on it never leak ``IndexError`` or ``struct.error`` and never
allocate more than the input holds.
"""

from __future__ import annotations

import struct

from trusted_launch.evidence.errors import ParseError

_U16BE = struct.Struct(">H")
_U32BE = struct.Struct(">I")
_U64BE = struct.Struct(">Q")
_U16LE = struct.Struct("<H")
_U32LE = struct.Struct("<I")
_U64LE = struct.Struct("<Q")


class Reader:
    """Sequential reader over a bytes-like buffer."""

    __slots__ = ("_buf", "_end", "_pos", "what")

    def __init__(self, data: bytes | memoryview, what: str, *, start: int = 0,
                 end: int | None = None) -> None:
        self._buf = data
        self._pos = start
        self._end = len(data) if end is None else end
        self.what = what

    @property
    def offset(self) -> int:
        return self._pos

    @property
    def remaining(self) -> int:
        return self._end - self._pos

    def at_end(self) -> bool:
        return self._pos >= self._end

    def error(self, problem: str, offset: int | None = None) -> ParseError:
        """A ParseError for this structure at ``offset`` (default: here)."""
        return ParseError(self.what, self._pos if offset is None else offset, problem)

    def _need(self, n: int, field: str) -> int:
        if n < 0 or n > self._end - self._pos:
            raise self.error(
                f"{field} needs {n} bytes, only {self._end - self._pos} left")
        pos = self._pos
        self._pos = pos + n
        return pos

    def bytes(self, n: int, field: str = "field") -> bytes:
        pos = self._need(n, field)
        return bytes(self._buf[pos:pos + n])

    def skip(self, n: int, field: str = "field") -> None:
        self._need(n, field)

    def u8(self, field: str = "uint8") -> int:
        pos = self._need(1, field)
        return self._buf[pos]

    def u16be(self, field: str = "uint16") -> int:
        return _U16BE.unpack_from(self._buf, self._need(2, field))[0]

    def u32be(self, field: str = "uint32") -> int:
        return _U32BE.unpack_from(self._buf, self._need(4, field))[0]

    def u64be(self, field: str = "uint64") -> int:
        return _U64BE.unpack_from(self._buf, self._need(8, field))[0]

    def u16le(self, field: str = "uint16") -> int:
        return _U16LE.unpack_from(self._buf, self._need(2, field))[0]

    def u32le(self, field: str = "uint32") -> int:
        return _U32LE.unpack_from(self._buf, self._need(4, field))[0]

    def u64le(self, field: str = "uint64") -> int:
        return _U64LE.unpack_from(self._buf, self._need(8, field))[0]

    def tpm2b(self, field: str = "TPM2B") -> bytes:
        """A TPM2B: big-endian uint16 size followed by that many bytes."""
        size = self.u16be(f"{field} size")
        return self.bytes(size, field)

    def sub(self, n: int, what: str) -> Reader:
        """A reader over the next ``n`` bytes; this reader skips past them."""
        pos = self._need(n, what)
        return Reader(self._buf, what, start=pos, end=pos + n)

    def expect_end(self) -> None:
        if self._pos != self._end:
            raise self.error(f"{self._end - self._pos} unexpected trailing bytes")
