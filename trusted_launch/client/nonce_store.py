"""Keep the tenant's launch nonces in 0600 files inside a 0700 directory."""

from __future__ import annotations

import os
import pathlib
import re
import stat

from trusted_launch.client.errors import NonceStoreError
from trusted_launch.crypto.nonce import encode_nonce, read_nonce_file

DEFAULT_NONCE_DIR = pathlib.Path("~/.local/share/trusted-launch/nonces")
_TOKEN_PREFIX_RE = re.compile(r"[0-9a-f]{16}")


def nonce_directory(nonce_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """Create (0700) or check the nonce directory; refuse one others can read."""
    path = pathlib.Path(nonce_dir or DEFAULT_NONCE_DIR).expanduser()
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode):
        raise NonceStoreError(f"nonce directory {path} is not a directory")
    if info.st_uid != os.geteuid():
        raise NonceStoreError(f"nonce directory {path} belongs to another user")
    if info.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def store_nonce(nonce: bytes, name: str, nonce_dir: str | os.PathLike | None = None
                ) -> pathlib.Path:
    """Write ``nonce`` to a new 0600 file ``<dir>/<name>``; never overwrite."""
    if not name or "/" in name or name.startswith("."):
        raise NonceStoreError(f"invalid nonce file name {name!r}")
    path = nonce_directory(nonce_dir) / name
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise NonceStoreError(f"nonce file {path} already exists") from None
    with os.fdopen(fd, "wb") as fileobj:
        fileobj.write(encode_nonce(nonce))
    return path


def load_nonce(path: str | os.PathLike) -> bytes:
    """Read a nonce file written by :func:`store_nonce` (or raw/base64 forms)."""
    return read_nonce_file(path)


def check_nonce_file_matches(path: str | os.PathLike, token_digest_hex: str) -> None:
    """Refuse a token that is not the one ``path`` was made for, if the name tells.

    ``token create`` names each nonce file after the first 16 hex digits of
    its token's digest; a renamed file is not checked.
    """
    name = pathlib.Path(path).name
    if _TOKEN_PREFIX_RE.fullmatch(name) and not token_digest_hex.startswith(name):
        raise NonceStoreError(
            f"the token is not the one nonce file {path} was made for (its name is the "
            "start of its token's digest): the token was cut or altered when copied, or "
            "belongs to another launch")
