"""What the guest agent knows about its VM: N, server id and SSH host key."""

from __future__ import annotations

import json
import os
import pathlib
from dataclasses import dataclass, field

from trusted_launch.crypto.nonce import read_nonce_file
from trusted_launch.crypto.vm_challenge import ssh_fingerprint

CONFIG_DRIVE_MOUNTS = ("/mnt/config", "/media/configdrive", "/run/trusted-launch/config-drive")
NONCE_FALLBACK = pathlib.Path("/run/trusted-launch/nonce")
DEFAULT_SSH_HOST_KEY = pathlib.Path("/etc/ssh/ssh_host_ed25519_key.pub")
MAX_META_DATA_BYTES = 1024 * 1024


class GuestSetupError(Exception):
    """The agent cannot find or read its nonce, server id or SSH host key."""


@dataclass(frozen=True)
class GuestIdentity:
    """The agent's view of its VM. ``repr`` hides the nonce."""

    server_id: str
    ssh_host_key: str
    ssh_host_key_fingerprint: str
    nonce: bytes = field(repr=False)


def default_nonce_file() -> pathlib.Path:
    """``trusted_launch/nonce`` on the first mounted config drive holding it."""
    for mount in CONFIG_DRIVE_MOUNTS:
        candidate = pathlib.Path(mount) / "trusted_launch" / "nonce"
        if candidate.is_file():
            return candidate
    return NONCE_FALLBACK


def default_meta_data() -> pathlib.Path:
    """``openstack/latest/meta_data.json`` on the first config drive holding it."""
    for mount in CONFIG_DRIVE_MOUNTS:
        candidate = pathlib.Path(mount) / "openstack" / "latest" / "meta_data.json"
        if candidate.is_file():
            return candidate
    return pathlib.Path(CONFIG_DRIVE_MOUNTS[0]) / "openstack" / "latest" / "meta_data.json"


def server_id_from_meta_data(path: str | os.PathLike) -> str:
    """The ``uuid`` field of a config drive's ``meta_data.json``."""
    try:
        with open(path, "rb") as fileobj:
            document = json.loads(fileobj.read(MAX_META_DATA_BYTES))
    except (OSError, ValueError) as exc:
        raise GuestSetupError(f"cannot read server id from {path}: {exc}") from None
    uuid = document.get("uuid") if isinstance(document, dict) else None
    if not isinstance(uuid, str) or not uuid:
        raise GuestSetupError(f"{path} has no 'uuid' string")
    return uuid


def load_identity(*, nonce_file: str | os.PathLike, server_id: str,
                  ssh_host_key: str | os.PathLike) -> GuestIdentity:
    """Read N and the SSH host key; GuestSetupError names what is missing."""
    try:
        nonce = read_nonce_file(nonce_file)
    except (OSError, ValueError) as exc:
        raise GuestSetupError(f"cannot read the launch nonce: {exc}") from None
    try:
        key_line = pathlib.Path(ssh_host_key).read_text(encoding="ascii").strip()
        fingerprint = ssh_fingerprint(key_line)
    except (OSError, ValueError) as exc:
        raise GuestSetupError(f"cannot read SSH host key {ssh_host_key}: {exc}") from None
    public_key = " ".join(key_line.split()[:2])
    return GuestIdentity(server_id, public_key, fingerprint, nonce)


def ttp_url_from_meta_data(path: str | os.PathLike) -> str | None:
    """The ``trusted_ttp`` server property in ``meta_data.json``, or None (never raises)."""
    try:
        with open(path, "rb") as fileobj:
            document = json.loads(fileobj.read(MAX_META_DATA_BYTES))
    except (OSError, ValueError):
        return None
    meta = document.get("meta") if isinstance(document, dict) else None
    url = meta.get("trusted_ttp") if isinstance(meta, dict) else None
    return url if isinstance(url, str) and url.startswith("https://") and len(url) < 256 \
        else None
