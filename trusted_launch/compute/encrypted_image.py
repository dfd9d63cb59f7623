"""Booting a LUKS-encrypted image with the image key the TTP released to this host.

The tenant's image is a qcow2 with LUKS encryption; Nova caches it as it is
(ciphertext) in ``<instances_path>/_base/`` and H is checked on those bytes.
With the released key the host:

1. replaces the guest's root disk by a LUKS-encrypted qcow2 overlay (same
   key) backed by the encrypted base, so neither the image nor the guest's
   writes are ever plaintext on disk (:func:`prepare_root_disk`); the overlay
   is a copy of an empty one made once per image, key and size on this host
   (:func:`overlay_template`), as writing a LUKS header costs QEMU seconds;
2. gives the root disk in the domain XML an ``<encryption format='luks'>``
   element for itself and for its backing store, naming one libvirt secret
   (:func:`add_disk_encryption`);
3. defines that secret ``ephemeral='yes' private='yes'``, sets its value from
   memory just before the domain starts and undefines it right after
   (:func:`defined_secret`), so the key lives in libvirt only while QEMU
   opens the disk.

The passphrase is the key's lower-case hex (:mod:`trusted_launch.crypto.image_key`);
it reaches ``qemu-img`` through a pipe and libvirt through ``virSecretSetValue``.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import pathlib
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

from lxml import etree

from trusted_launch.compute.errors import LaunchRefused
from trusted_launch.compute.file_watch import FileValues, FileWatch
from trusted_launch.crypto.image_key import (
    LUKS_ITER_TIME_MS,
    check_image_key,
    luks_passphrase,
    passphrase_pipe,
    secret_object,
)

QEMU_IMG = "qemu-img"
QCOW2_MAGIC = b"QFI\xfb"
_SECRET_ID = "tlkey0"  # noqa: S105 - the id of a QEMU secret object, not a secret
_SECRET_NAMESPACE = uuid.UUID("6f1c2d0e-5b7a-4c3e-9a1f-7d2b8e4c6a10")
_TIMEOUT_S = 600
#: QEMU times its PBKDF2 calibration with thread CPU time; on a busy host it can
#: measure nothing and fail with this message, so the creation is tried again.
PBKDF_TIMING_ERROR = "Unable to get accurate CPU usage"
_PBKDF_ATTEMPTS = 8  # getrusage() can attribute no CPU time to a short run: a flake
_TEMPLATE_LABEL = b"trusted-launch/v1 overlay template\0"


class ImageEncryptionRefused(LaunchRefused):
    """The image's encryption and the released key (or this host's settings) disagree."""

    check = "image_encryption"


@dataclass(frozen=True)
class DiskInfo:
    """What ``qemu-img info`` says about a disk file (no key is needed for it)."""

    path: str
    format: str
    virtual_size: int
    encrypt_format: str | None = None
    backing_file: str | None = None

    @property
    def is_luks_qcow2(self) -> bool:
        return self.format == "qcow2" and self.encrypt_format == "luks"


@dataclass(frozen=True)
class EncryptedRoot:
    """A root disk waiting for its guest to start. ``repr`` hides the key."""

    key: bytes = field(repr=False)
    disk_path: str
    backing_path: str
    secret_uuid: str


def secret_uuid_for(instance_uuid: str) -> str:
    """The libvirt secret uuid of an instance's disk key (stable across its starts)."""
    return str(uuid.uuid5(_SECRET_NAMESPACE, instance_uuid))


def inspect_disk(path: str | os.PathLike) -> DiskInfo:
    """qcow2 details via ``qemu-img info -f qcow2``; anything else is reported as raw."""
    path = os.fspath(path)
    with open(path, "rb") as fileobj:
        magic = fileobj.read(len(QCOW2_MAGIC))
    if magic != QCOW2_MAGIC:
        return DiskInfo(path, "raw", os.path.getsize(path))
    result = _run([QEMU_IMG, "info", "--output=json", "-U", "-f", "qcow2", path],
                  what=f"inspecting {path}")
    try:
        info = json.loads(result.stdout)
        encrypt = (info.get("format-specific", {}).get("data", {}) or {}).get("encrypt") or {}
        return DiskInfo(path, info["format"], int(info["virtual-size"]),
                        encrypt.get("format") if info.get("encrypted") else None,
                        info.get("full-backing-filename") or info.get("backing-filename"))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ImageEncryptionRefused(f"qemu-img info of {path} is not usable") from None


class BaseDiskInfos:
    """:func:`inspect_disk` of cached base images, run once while a file's bytes hold.

    Every trusted launch checks whether its base is a LUKS qcow2; ``qemu-img
    info`` (a process, tens of ms) runs again only after the file changed
    (:class:`~trusted_launch.compute.file_watch.FileValues`).
    """

    def __init__(self, watch: FileWatch | None = None) -> None:
        self._values: FileValues[DiskInfo] = FileValues(watch)

    @property
    def inspected(self) -> int:
        """How many times qemu-img (or the raw check) actually ran."""
        return self._values.computed

    def inspect(self, base: str | os.PathLike) -> DiskInfo:
        path = pathlib.Path(base)
        return self._values.get(path, "disk-info", lambda: inspect_disk(path))


def check_key_matches(base: DiskInfo, image_key: bytes | None) -> bool:
    """True if ``base`` is a LUKS qcow2 to boot with ``image_key``; refuse a mismatch."""
    if base.is_luks_qcow2 and image_key is None:
        raise ImageEncryptionRefused(
            "the image is a LUKS-encrypted qcow2 but the token carries no image key")
    if image_key is not None and not base.is_luks_qcow2:
        detail = f"{base.format}, encryption {base.encrypt_format or 'none'}"
        raise ImageEncryptionRefused(
            "the token carries an image key but the cached image is not a LUKS-encrypted "
            f"qcow2 ({detail}); refusing to boot it unencrypted")
    if image_key is not None:
        check_image_key(image_key)
    return image_key is not None


def check_host_settings(*, force_raw_images: bool, images_type: str,
                        use_cow_images: bool) -> None:
    """Refuse host settings under which an encrypted image cannot stay encrypted."""
    if force_raw_images:
        raise ImageEncryptionRefused(
            "this host sets [DEFAULT] force_raw_images = True, which would need the image "
            "decrypted to a raw file; encrypted images need force_raw_images = False")
    if images_type not in ("qcow2", "default") or (images_type == "default"
                                                    and not use_cow_images):
        raise ImageEncryptionRefused(
            f"encrypted images need qcow2 instance disks ([libvirt] images_type = qcow2, or "
            f"default with use_cow_images = True), not images_type = {images_type}")


def prepare_root_disk(disk_path: str | os.PathLike, base: DiskInfo, key: bytes,
                      instance_uuid: str, *,
                      template_dir: str | os.PathLike | None = None) -> EncryptedRoot:
    """Make ``disk_path`` a LUKS qcow2 overlay of ``base`` keyed by ``key`` (kept if it is one).

    A plain overlay Nova just created over the encrypted base is replaced: no
    guest ever ran on it (the base cannot be read without the key). Any other
    existing disk is refused rather than overwritten. With ``template_dir``
    the overlay is a copy of an empty one made once per (base file, key, size)
    (:func:`overlay_template`), which takes milliseconds instead of QEMU's
    seconds-long LUKS header creation.
    """
    disk_path = os.fspath(disk_path)
    size = base.virtual_size
    if os.path.exists(disk_path):
        current = inspect_disk(disk_path)
        if current.is_luks_qcow2:
            return _root(key, current, base.path, instance_uuid)
        if current.format != "qcow2" or not _same_file(current.backing_file, base.path):
            raise ImageEncryptionRefused(
                f"the root disk {disk_path} exists and is not an overlay of the encrypted "
                "image; refusing to replace it")
        size = max(size, current.virtual_size)
        os.unlink(disk_path)
    if template_dir is None:
        create_encrypted_overlay(base.path, disk_path, key, size)
    else:
        _copy_exclusive(overlay_template(template_dir, base, key, size), disk_path)
    return _root(key, inspect_disk(disk_path), base.path, instance_uuid)


def overlay_template(template_dir: str | os.PathLike, base: DiskInfo, key: bytes,
                     size: int) -> pathlib.Path:
    """An empty LUKS overlay of ``base`` for ``key`` and ``size``, made on first use.

    QEMU spends about two CPU-seconds calibrating PBKDF2 whenever it writes a
    LUKS header, whatever ``iter-time`` says, so each (base file, key, size)
    gets its header once and every root disk is a copy of that template. The
    copies share the overlay's master key, which lets this host see which
    blocks are equal across instances of the same encrypted image (as it can
    for their common base image); each instance's own writes stay encrypted.
    The file name holds an HMAC of the key, which reveals nothing of it.
    """
    directory = pathlib.Path(template_dir)
    path = directory / _template_name(base, key, size)
    if path.exists():
        return path
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    try:
        create_encrypted_overlay(base.path, str(partial), key, size)
        os.replace(partial, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
    return path


def _template_name(base: DiskInfo, key: bytes, size: int) -> str:
    """Changes with the base file (path, inode, mtime), the key and the virtual size."""
    state = os.stat(base.path)
    identity = (f"{pathlib.Path(base.path).resolve()}\0{state.st_ino}\0{state.st_mtime_ns}"
                f"\0{state.st_size}\0{size}").encode()
    tag = hmac.new(key, _TEMPLATE_LABEL + identity, hashlib.sha256).hexdigest()[:32]
    return f"overlay-{tag}.qcow2"


def _copy_exclusive(source: pathlib.Path, target: str) -> None:
    """Copy ``source`` to a new file ``target`` (never over an existing one)."""
    with open(source, "rb") as reader, open(target, "xb") as writer:
        shutil.copyfileobj(reader, writer, 1 << 20)


def create_encrypted_overlay(base_path: str, target: str, key: bytes, size: int) -> None:
    """``qemu-img create`` a LUKS qcow2 backed by ``base_path``; the key goes through a pipe."""
    options = (f"encrypt.format=luks,encrypt.key-secret={_SECRET_ID},"
               f"encrypt.iter-time={LUKS_ITER_TIME_MS}")
    for attempt in range(1, _PBKDF_ATTEMPTS + 1):
        with passphrase_pipe(luks_passphrase(key)) as fd:
            try:
                _run([QEMU_IMG, "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", base_path,
                      "--object", secret_object(_SECRET_ID, fd), "-o", options, target,
                      str(size)], what=f"creating the encrypted root disk {target}",
                     pass_fds=(fd,))
                return
            except ImageEncryptionRefused as exc:
                if PBKDF_TIMING_ERROR not in exc.reason or attempt == _PBKDF_ATTEMPTS:
                    raise
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(target)


def add_disk_encryption(xml: str, root: EncryptedRoot) -> str:
    """The domain XML with LUKS encryption on ``root``'s disk and its backing store."""
    domain = etree.fromstring(xml.encode("utf-8"))
    disk = _root_disk_element(domain, root.disk_path)
    source = disk.find("source")
    for old in (*source.findall("encryption"), *disk.findall("encryption"),
                *disk.findall("backingStore")):
        old.getparent().remove(old)
    source.append(_encryption_element(root.secret_uuid))
    driver = disk.find("driver")
    if driver is None:
        driver = etree.SubElement(disk, "driver", name="qemu")
    driver.set("type", "qcow2")
    backing = etree.Element("backingStore", type="file")
    etree.SubElement(backing, "format", type="qcow2")
    backing_source = etree.SubElement(backing, "source", file=root.backing_path)
    backing_source.append(_encryption_element(root.secret_uuid))
    etree.SubElement(backing, "backingStore")
    source.addnext(backing)
    return etree.tostring(domain, encoding="unicode")


@contextlib.contextmanager
def defined_secret(connection, root: EncryptedRoot) -> Iterator[None]:
    """An ephemeral private libvirt secret holding the passphrase, undefined on exit."""
    _undefine_stale(connection, root.secret_uuid)
    secret = connection.secretDefineXML(_secret_xml(root))
    try:
        secret.setValue(luks_passphrase(root.key))
        yield
    finally:
        secret.undefine()


def _secret_xml(root: EncryptedRoot) -> str:
    element = etree.Element("secret", ephemeral="yes", private="yes")
    etree.SubElement(element, "description").text = "trusted launch image key"
    etree.SubElement(element, "uuid").text = root.secret_uuid
    usage = etree.SubElement(element, "usage", type="volume")
    etree.SubElement(usage, "volume").text = root.disk_path
    return etree.tostring(element, encoding="unicode")


def _undefine_stale(connection, secret_uuid: str) -> None:
    """Drop a secret of this uuid left by a crashed start (no value is read)."""
    for secret in connection.listAllSecrets(0):
        if secret.UUIDString() == secret_uuid:
            secret.undefine()


def _encryption_element(secret_uuid: str) -> etree._Element:
    encryption = etree.Element("encryption", format="luks")
    etree.SubElement(encryption, "secret", type="passphrase", uuid=secret_uuid)
    return encryption


def _root_disk_element(domain: etree._Element, disk_path: str) -> etree._Element:
    for disk in domain.findall("./devices/disk"):
        source = disk.find("source")
        if source is not None and _same_file(source.get("file"), disk_path):
            return disk
    raise ImageEncryptionRefused(
        f"the domain XML has no disk for the encrypted root disk {disk_path}")


def _root(key: bytes, disk: DiskInfo, base_path: str, instance_uuid: str) -> EncryptedRoot:
    if not _same_file(disk.backing_file, base_path):
        raise ImageEncryptionRefused(
            f"the encrypted root disk {disk.path} is not backed by the checked image "
            f"{base_path} (backing file: {disk.backing_file})")
    return EncryptedRoot(key, disk.path, base_path, secret_uuid_for(instance_uuid))


def _same_file(first: str | None, second: str | None) -> bool:
    if not first or not second:
        return False
    return pathlib.Path(first).resolve() == pathlib.Path(second).resolve()


def _run(command: list[str], *, what: str,
         pass_fds: tuple[int, ...] = ()) -> subprocess.CompletedProcess:
    try:
        result = subprocess.run(command, capture_output=True, text=True, pass_fds=pass_fds,
                                timeout=_TIMEOUT_S, check=False)
    except FileNotFoundError:
        raise ImageEncryptionRefused(
            f"{QEMU_IMG} is not installed on this host (package qemu-utils)") from None
    except subprocess.TimeoutExpired:
        raise ImageEncryptionRefused(f"qemu-img timed out {what}") from None
    if result.returncode != 0:
        raise ImageEncryptionRefused(f"qemu-img failed {what}: {result.stderr.strip()[-200:]}")
    return result


__all__ = ["DiskInfo", "EncryptedRoot", "ImageEncryptionRefused",
           "add_disk_encryption", "check_host_settings", "check_key_matches",
           "create_encrypted_overlay", "defined_secret", "inspect_disk", "overlay_template",
           "prepare_root_disk",
           "secret_uuid_for"]
