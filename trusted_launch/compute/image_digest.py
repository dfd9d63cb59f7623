"""Digest of the cached base image this host boots, computed once per cached file.

Nova keeps each downloaded image once in ``<instances_path>/_base/`` and builds
every instance disk on top of it, so H is checked against that file: the bytes
this host actually boots, never the digest Glance claims. Hashing a large
image takes seconds, so the result is remembered in process and in a sidecar
file ``<base>.trusted-launch.<alg>`` next to it. Either record is used only
while the base file's device, inode, size, mtime and ctime are unchanged; any
change (a re-download, an edit, ``touch``) makes the next launch hash again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pathlib
import tempfile
import threading
from dataclasses import asdict, dataclass

from trusted_launch.crypto.digest import DIGEST_SIZES, ImageDigest, digest_file

LOG = logging.getLogger(__name__)
SIDECAR_SUFFIX = ".trusted-launch."
MAX_SIDECAR_BYTES = 4096


class BaseImageMissing(FileNotFoundError):
    """No local base image to digest (e.g. RBD clones or boot from volume)."""


@dataclass(frozen=True)
class FileIdentity:
    """What must stay equal for a remembered digest to stay valid."""

    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, path: pathlib.Path) -> FileIdentity:
        info = path.stat()
        return cls(info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns)


def sidecar_path(base: pathlib.Path, algorithm: str) -> pathlib.Path:
    """Where the digest of ``base`` is remembered on disk."""
    return base.with_name(base.name + SIDECAR_SUFFIX + algorithm)


class BaseImageDigests:
    """Digests of base image files, each computed once while the file is unchanged."""

    def __init__(self, *, use_sidecars: bool = True) -> None:
        self._use_sidecars = use_sidecars
        self._memory: dict[tuple[str, str], tuple[FileIdentity, ImageDigest]] = {}
        self._lock = threading.Lock()
        self._file_locks: dict[str, threading.Lock] = {}
        self.computed = 0  # how many times a file was actually hashed

    def digest(self, base: str | os.PathLike, algorithm: str) -> ImageDigest:
        """The ``algorithm`` digest of ``base``; BaseImageMissing if it does not exist."""
        path = pathlib.Path(base)
        if algorithm not in DIGEST_SIZES:
            raise ValueError(f"image digest algorithm {algorithm!r} is not supported")
        with self._lock_for(path):
            identity = self._identity(path)
            remembered = self._remembered(path, algorithm, identity)
            if remembered is not None:
                return remembered
            value = digest_file(path, algorithm)
            self.computed += 1
            if FileIdentity.of(path) != identity:
                raise OSError(f"base image {path} changed while it was being hashed")
            self._remember(path, algorithm, identity, value)
            return value

    def _lock_for(self, path: pathlib.Path) -> threading.Lock:
        with self._lock:
            return self._file_locks.setdefault(str(path), threading.Lock())

    @staticmethod
    def _identity(path: pathlib.Path) -> FileIdentity:
        try:
            return FileIdentity.of(path)
        except FileNotFoundError:
            raise BaseImageMissing(f"no cached base image at {path}") from None

    def _remembered(self, path: pathlib.Path, algorithm: str,
                    identity: FileIdentity) -> ImageDigest | None:
        entry = self._memory.get((str(path), algorithm))
        if entry is not None and entry[0] == identity:
            return entry[1]
        if not self._use_sidecars:
            return None
        value = _read_sidecar(sidecar_path(path, algorithm), algorithm, identity)
        if value is not None:
            self._memory[(str(path), algorithm)] = (identity, value)
        return value

    def _remember(self, path: pathlib.Path, algorithm: str, identity: FileIdentity,
                  value: ImageDigest) -> None:
        self._memory[(str(path), algorithm)] = (identity, value)
        if self._use_sidecars:
            try:
                _write_sidecar(sidecar_path(path, algorithm), identity, value)
            except OSError as exc:  # the digest is still right; only the cache is lost
                LOG.warning("cannot write image digest sidecar for %s: %s", path, exc)


def _read_sidecar(path: pathlib.Path, algorithm: str,
                  identity: FileIdentity) -> ImageDigest | None:
    """The remembered digest if the sidecar is well formed and matches ``identity``."""
    try:
        with open(path, "rb") as fileobj:
            document = json.loads(fileobj.read(MAX_SIDECAR_BYTES))
        if FileIdentity(**document["file"]) != identity:
            return None
        value = ImageDigest.parse(document["digest"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        LOG.warning("ignoring unusable image digest sidecar %s: %s", path, exc)
        return None
    return value if value.algorithm == algorithm else None


def _write_sidecar(path: pathlib.Path, identity: FileIdentity, value: ImageDigest) -> None:
    """Write the sidecar atomically (temporary file, then rename)."""
    document = json.dumps({"file": asdict(identity), "digest": str(value)}).encode()
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fileobj:
            fileobj.write(document)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
