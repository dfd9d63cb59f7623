"""Encrypt an image for a trusted launch: a LUKS qcow2 whose key only the token carries.

The tenant converts a raw or qcow2 image to a qcow2 with LUKS encryption
(``qemu-img convert``), uploads the result to Glance and puts the image key in
the launch token (``token create --image-key-file``). The TTP releases the key
with N only to an attested host. H in the token is the digest of the
encrypted file: the bytes the host downloads and checks.

The key file holds the key's 32 lower-case hex characters and a newline; it
is created 0600 and never overwritten, and a key file others can read is
refused. The passphrase reaches ``qemu-img`` through a pipe only.
"""

from __future__ import annotations

import json
import os
import pathlib
import stat
import subprocess
from dataclasses import dataclass

from trusted_launch.client.errors import ClientError
from trusted_launch.crypto.digest import ImageDigest, digest_file
from trusted_launch.crypto.image_key import (
    IMAGE_KEY_SIZE,
    LUKS_ITER_TIME_MS,
    ImageKeyError,
    check_image_key,
    luks_passphrase,
    new_image_key,
    passphrase_pipe,
    secret_object,
)

QEMU_IMG = "qemu-img"
SOURCE_FORMATS = ("raw", "qcow2")
_SECRET_ID = "tlkey0"  # noqa: S105 - the id of a QEMU secret object, not a secret
_TIMEOUT_S = 3600
_PBKDF_TIMING_ERROR = "Unable to get accurate CPU usage"
_PBKDF_ATTEMPTS = 8  # getrusage() can attribute no CPU time to a short run: a flake


class ImageEncryptionError(ClientError):
    """The image could not be encrypted (bad source, existing target, qemu-img failed)."""


class ImageKeyFileError(ClientError):
    """The image key file is missing, malformed, readable by others or already exists."""


@dataclass(frozen=True)
class EncryptedImage:
    """The result of :func:`encrypt_image`: where it is and the digest for the token."""

    path: pathlib.Path
    digest: ImageDigest
    source_format: str


def write_new_key_file(path: str | os.PathLike) -> bytes:
    """Create ``path`` (0600, never overwriting) with a new image key; return the key."""
    key = new_image_key()
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise ImageKeyFileError(f"image key file {path} already exists; "
                                "refusing to overwrite a key") from None
    with os.fdopen(fd, "w", encoding="ascii") as fileobj:
        fileobj.write(key.hex() + "\n")
    return key


def read_key_file(path: str | os.PathLike) -> bytes:
    """The image key in ``path``; ImageKeyFileError if unusable or readable by others."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        raise ImageKeyFileError(f"cannot open image key file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as fileobj:
        mode = os.fstat(fileobj.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise ImageKeyFileError(f"image key file {path} is not a regular file")
        if mode & 0o077:
            raise ImageKeyFileError(
                f"image key file {path} has mode {stat.S_IMODE(mode):04o}; others may read "
                "it (chmod 600)")
        text = fileobj.read(4 * IMAGE_KEY_SIZE).strip()
    try:
        return check_image_key(bytes.fromhex(text.decode("ascii")))
    except (UnicodeDecodeError, ValueError):
        raise ImageKeyFileError(
            f"image key file {path} does not hold {2 * IMAGE_KEY_SIZE} hex characters "
            f"({IMAGE_KEY_SIZE} bytes)") from None


def load_or_create_key(path: str | os.PathLike) -> tuple[bytes, bool]:
    """``(key, created)``: the key in ``path``, or a new one written there."""
    if os.path.lexists(path):
        return read_key_file(path), False
    return write_new_key_file(path), True


def source_format(path: str | os.PathLike) -> str:
    """``raw`` or ``qcow2`` per ``qemu-img info``; refuse others, backing files, encryption."""
    info = _qemu_img_info(path)
    fmt = info.get("format")
    if fmt not in SOURCE_FORMATS:
        raise ImageEncryptionError(f"{path} is {fmt!r}; only {', '.join(SOURCE_FORMATS)} "
                                   "images can be encrypted")
    if info.get("backing-filename"):
        raise ImageEncryptionError(f"{path} has a backing file; convert it to a "
                                   "standalone image first")
    if info.get("encrypted"):
        raise ImageEncryptionError(f"{path} is already encrypted")
    return fmt


def encrypt_image(source: str | os.PathLike, target: str | os.PathLike, key: bytes, *,
                  digest_algorithm: str = "sha512") -> EncryptedImage:
    """Convert ``source`` to a LUKS-encrypted qcow2 ``target``; return its digest."""
    check_image_key(key)
    target = pathlib.Path(target)
    if os.path.lexists(target):
        raise ImageEncryptionError(f"{target} already exists; refusing to overwrite it")
    fmt = source_format(source)
    options = (f"encrypt.format=luks,encrypt.key-secret={_SECRET_ID},"
               f"encrypt.iter-time={LUKS_ITER_TIME_MS}")
    for attempt in range(1, _PBKDF_ATTEMPTS + 1):
        with passphrase_pipe(luks_passphrase(key)) as fd:
            command = [QEMU_IMG, "convert", "-q", "-f", fmt, "-O", "qcow2",
                       "--object", secret_object(_SECRET_ID, fd), "-o", options,
                       os.fspath(source), os.fspath(target)]
            try:
                _run(command, pass_fds=(fd,), what=f"encrypting {source}", cleanup=target)
                break
            except ImageEncryptionError as exc:
                # QEMU's PBKDF2 calibration can measure no CPU time on a busy machine.
                if _PBKDF_TIMING_ERROR not in str(exc) or attempt == _PBKDF_ATTEMPTS:
                    raise
    return EncryptedImage(target, digest_file(target, digest_algorithm), fmt)


def _qemu_img_info(path: str | os.PathLike) -> dict:
    if not os.path.isfile(path):
        raise ImageEncryptionError(f"source image {path} does not exist or is not a file")
    result = _run([QEMU_IMG, "info", "--output=json", os.fspath(path)],
                  what=f"inspecting {path}")
    try:
        return json.loads(result.stdout)
    except ValueError:
        raise ImageEncryptionError(f"qemu-img info of {path} is not JSON") from None


def _run(command: list[str], *, what: str, pass_fds: tuple[int, ...] = (),
         cleanup: pathlib.Path | None = None) -> subprocess.CompletedProcess:
    try:
        result = subprocess.run(command, capture_output=True, text=True, pass_fds=pass_fds,
                                timeout=_TIMEOUT_S, check=False)
    except FileNotFoundError:
        raise ImageEncryptionError(f"{QEMU_IMG} is not installed (package qemu-utils)") \
            from None
    except subprocess.TimeoutExpired:
        result = None
    if result is None or result.returncode != 0:
        if cleanup is not None and cleanup.exists():
            cleanup.unlink()
        detail = "timed out" if result is None else result.stderr.strip()[-300:]
        raise ImageEncryptionError(f"qemu-img failed {what}: {detail}")
    return result


__all__ = ["EncryptedImage", "ImageEncryptionError", "ImageKeyError", "ImageKeyFileError",
           "encrypt_image", "load_or_create_key", "read_key_file", "source_format",
           "write_new_key_file"]
