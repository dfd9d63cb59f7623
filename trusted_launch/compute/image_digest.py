"""Digest of the cached base image this host boots, computed once per cached file.

Nova keeps each downloaded image once in ``<instances_path>/_base/`` and builds
every instance disk on top of it, so H is checked against that file: the bytes
this host actually boots, never the digest Glance claims. Hashing a large
image takes seconds, so the result is remembered in process while the file's
bytes cannot have changed (:mod:`.file_watch`: Nova's own touch keeps it, any
write drops it) and in a sidecar file ``<base>.trusted-launch.<alg>`` next to
it, used only while the base file's device, inode, size, mtime and ctime are
those it records.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pathlib
import tempfile
from dataclasses import asdict

from trusted_launch.compute.file_watch import FileIdentity, FileValues, FileWatch
from trusted_launch.crypto.digest import DIGEST_SIZES, ImageDigest, digest_file

LOG = logging.getLogger(__name__)
SIDECAR_SUFFIX = ".trusted-launch."
MAX_SIDECAR_BYTES = 4096

__all__ = ["BaseImageDigests", "BaseImageMissing", "sidecar_path"]


class BaseImageMissing(FileNotFoundError):
    """No local base image to digest (e.g. RBD clones or boot from volume)."""


def sidecar_path(base: pathlib.Path, algorithm: str) -> pathlib.Path:
    """Where the digest of ``base`` is remembered on disk."""
    return base.with_name(base.name + SIDECAR_SUFFIX + algorithm)


class BaseImageDigests:
    """Digests of base image files, each computed once while the file's bytes hold."""

    def __init__(self, *, use_sidecars: bool = True, watch: FileWatch | None = None) -> None:
        self._use_sidecars = use_sidecars
        self._values: FileValues[ImageDigest] = FileValues(watch)

    @property
    def computed(self) -> int:
        """How many times a file was actually hashed."""
        return self._values.computed

    def digest(self, base: str | os.PathLike, algorithm: str) -> ImageDigest:
        """The ``algorithm`` digest of ``base``; BaseImageMissing if it does not exist."""
        path = pathlib.Path(base)
        if algorithm not in DIGEST_SIZES:
            raise ValueError(f"image digest algorithm {algorithm!r} is not supported")

        def compute() -> ImageDigest:
            return digest_file(path, algorithm)

        def load(identity: FileIdentity) -> ImageDigest | None:
            if not self._use_sidecars:
                return None
            return _read_sidecar(sidecar_path(path, algorithm), algorithm, identity)

        def store(identity: FileIdentity, value: ImageDigest) -> None:
            if not self._use_sidecars:
                return
            try:
                _write_sidecar(sidecar_path(path, algorithm), identity, value)
            except OSError as exc:  # the digest is still right; only the cache is lost
                LOG.warning("cannot write image digest sidecar for %s: %s", path, exc)

        try:
            return self._values.get(path, algorithm, compute, load, store)
        except FileNotFoundError:
            raise BaseImageMissing(f"no cached base image at {path}") from None


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
