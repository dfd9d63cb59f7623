"""The image key of an encrypted image and how it reaches ``qemu-img`` / QEMU.

An image key is 16 random bytes (128 bits). QEMU's LUKS driver takes a
passphrase; the passphrase of an image key is its 32-character lower-case
hex. It reaches ``qemu-img`` only through a pipe (``--object
secret,file=/dev/fd/N``), never on a command line, in the environment or in
a file.

The LUKS key slot is made with a short PBKDF2 iteration time
(:data:`LUKS_ITER_TIME_MS`): the passphrase already carries 128 bits of
entropy, so stretching adds no strength, while every open of the image (each
guest start) would pay the full iteration time again.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator

IMAGE_KEY_SIZE = 16
LUKS_ITER_TIME_MS = 10
_PIPE_CAPACITY = 4096  # a passphrase written at once must fit in the pipe buffer


class ImageKeyError(ValueError):
    """An image key or key file that is unusable (wrong size, format or mode)."""


def new_image_key() -> bytes:
    """16 random bytes from the OS's CSPRNG."""
    return secrets.token_bytes(IMAGE_KEY_SIZE)


def check_image_key(key: bytes) -> bytes:
    """Return ``key`` if it is exactly :data:`IMAGE_KEY_SIZE` bytes, else ImageKeyError."""
    if not isinstance(key, bytes) or len(key) != IMAGE_KEY_SIZE:
        size = len(key) if isinstance(key, bytes) else type(key).__name__
        raise ImageKeyError(f"an image key must be {IMAGE_KEY_SIZE} bytes, not {size}")
    return key


def luks_passphrase(key: bytes) -> bytes:
    """The LUKS passphrase QEMU gets for ``key``: its lower-case hex, ASCII."""
    return check_image_key(key).hex().encode("ascii")


@contextlib.contextmanager
def passphrase_pipe(passphrase: bytes) -> Iterator[int]:
    """A readable fd holding ``passphrase`` then EOF; pass it with ``pass_fds``.

    The write end is closed before the fd is handed out, so the reader sees
    the whole passphrase and then end of file; the read end is closed on exit.
    """
    if len(passphrase) >= _PIPE_CAPACITY:
        raise ImageKeyError("passphrase is too long for a pipe")
    read_fd, write_fd = os.pipe()
    try:
        try:
            os.write(write_fd, passphrase)
        finally:
            os.close(write_fd)
        yield read_fd
    finally:
        os.close(read_fd)


def secret_object(secret_id: str, fd: int) -> str:
    """The ``--object`` argument that makes QEMU read secret ``secret_id`` from ``fd``."""
    return f"secret,id={secret_id},file=/dev/fd/{fd},format=raw"


__all__ = ["IMAGE_KEY_SIZE", "LUKS_ITER_TIME_MS", "ImageKeyError", "check_image_key",
           "luks_passphrase", "new_image_key", "passphrase_pipe", "secret_object"]
