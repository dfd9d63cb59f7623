"""Streaming image digests agree with hashlib and coreutils."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess

import pytest

from trusted_launch.crypto.digest import ImageDigest, digest_file, digest_stream
from trusted_launch.crypto.errors import InvalidImageDigest


@pytest.mark.parametrize("size", [0, 1, 4095, 1024 * 1024, 4 * 1024 * 1024 + 7])
@pytest.mark.parametrize("algorithm", ["sha256", "sha512"])
def test_digest_file_matches_hashlib(tmp_path, size, algorithm):
    data = os.urandom(size)
    path = tmp_path / "image"
    path.write_bytes(data)
    assert digest_file(path, algorithm) == ImageDigest(
        algorithm, hashlib.new(algorithm, data).digest())


def test_default_is_sha512(tmp_path):
    path = tmp_path / "image"
    path.write_bytes(b"abc")
    assert digest_file(path).algorithm == "sha512"


@pytest.mark.skipif(shutil.which("sha512sum") is None, reason="coreutils sha512sum missing")
def test_agrees_with_sha512sum(tmp_path):
    path = tmp_path / "image"
    path.write_bytes(os.urandom(3 * 1024 * 1024 + 5))
    out = subprocess.run(["sha512sum", str(path)], check=True, capture_output=True, text=True)
    assert digest_file(path).value.hex() == out.stdout.split()[0]


class ReadOnlyStream:
    """A stream with read() but no readinto(), returning short reads."""

    def __init__(self, data: bytes) -> None:
        self._buffer = io.BytesIO(data)

    def read(self, size: int) -> bytes:
        return self._buffer.read(min(size, 1000))


@pytest.mark.parametrize("chunk_size", [1, 7, 4096])
def test_digest_stream_small_chunks_and_read_only_streams(chunk_size):
    data = os.urandom(20000)
    want = hashlib.sha256(data).digest()
    assert digest_stream(io.BytesIO(data), "sha256", chunk_size=chunk_size).value == want
    assert digest_stream(ReadOnlyStream(data), "sha256", chunk_size=chunk_size).value == want


def test_digest_stream_continues_from_current_position():
    stream = io.BytesIO(b"headerpayload")
    stream.seek(6)
    assert digest_stream(stream, "sha256").value == hashlib.sha256(b"payload").digest()


def test_unknown_algorithm(tmp_path):
    path = tmp_path / "image"
    path.write_bytes(b"x")
    with pytest.raises(InvalidImageDigest, match="md5"):
        digest_file(path, "md5")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        digest_file(tmp_path / "absent")
