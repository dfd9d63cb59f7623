"""Step 13: put the launch nonce N on the instance's config drive, and nowhere else.

N travels from the TPM decryption to the config drive inside this process
only: :class:`PendingNonces` holds it by instance uuid between the release
(before the domain XML) and the config drive build (after the XML is defined,
before the guest starts). It never becomes an instance field, system
metadata, a server metadata item, an injected file or a log argument, so it
cannot reach Nova's database, notifications, the metadata API or the domain
XML. The file ``trusted_launch/nonce`` (64 hex characters and a newline, see
:mod:`trusted_launch.crypto.nonce`) is where the guest agent looks for it.
Beside it go the TTP's signed receipt of the launch (``receipt.json``) and,
when the host has it, the TTP's receipt public key (``receipt_key.pem``), with
which the guest agent checks that receipt's signature.
"""

from __future__ import annotations

import os
import threading

from trusted_launch.crypto.nonce import encode_nonce

#: Path of N inside the config drive (the guest agent reads it from there).
NONCE_PATH = "trusted_launch/nonce"
RECEIPT_PATH = "trusted_launch/receipt.json"
#: The TTP's receipt public key (PEM): the guest agent verifies receipt.json with it.
RECEIPT_KEY_PATH = "trusted_launch/receipt_key.pem"


class PendingNonces:
    """Nonces released for instances whose config drive is not built yet."""

    def __init__(self) -> None:
        self._nonces: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"PendingNonces(<{len(self._nonces)} hidden>)"

    def __contains__(self, instance_uuid: str) -> bool:
        with self._lock:
            return instance_uuid in self._nonces

    def put(self, instance_uuid: str, nonce: bytes) -> None:
        encode_nonce(nonce)  # validates the length before anything is stored
        with self._lock:
            self._nonces[instance_uuid] = nonce

    def pop(self, instance_uuid: str) -> bytes | None:
        """The nonce for ``instance_uuid`` (forgotten here), or None."""
        with self._lock:
            return self._nonces.pop(instance_uuid, None)


def nonce_builder_class(base: type) -> type:
    """A ``ConfigDriveBuilder`` subclass that also writes :data:`NONCE_PATH`.

    The nonce is kept out of ``mdfiles`` (which the builder's ``repr`` shows)
    and written only into the temporary tree the drive image is made from.
    """

    class NonceConfigDriveBuilder(base):
        def __init__(self, instance_md, nonce: bytes, receipt: bytes | None = None,
                     receipt_key: bytes | None = None) -> None:
            super().__init__(instance_md=instance_md)
            self._nonce_file = encode_nonce(nonce)
            self._receipt = receipt
            self._receipt_key = receipt_key if receipt is not None else None

        def _write_md_files(self, basedir: str) -> None:
            super()._write_md_files(basedir)
            _write_private(os.path.join(basedir, NONCE_PATH), self._nonce_file)
            if self._receipt is not None:
                _write_private(os.path.join(basedir, RECEIPT_PATH), self._receipt)
            if self._receipt_key is not None:
                _write_private(os.path.join(basedir, RECEIPT_KEY_PATH), self._receipt_key)

    return NonceConfigDriveBuilder


def _write_private(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fileobj:
        fileobj.write(data)


def create_config_drive_with_nonce(driver, context, instance, injection_info, nonce: bytes,
                                   *, receipt: bytes | None = None,
                                   receipt_key: bytes | None = None,
                                   rescue: bool = False) -> None:
    """Nova 34's ``LibvirtDriver._create_configdrive`` plus the nonce file.

    Mirrors the upstream method step by step (device metadata, builder over
    ``InstanceMetadata``, local image, import into the image backend) so the
    drive is the one Nova would build, with ``trusted_launch/nonce`` added (and
    the TTP's signed launch receipt as ``trusted_launch/receipt.json``, if any, and the
    TTP's receipt public key ``receipt_key`` as ``trusted_launch/receipt_key.pem``).
    """
    from nova.api.metadata import base as instance_metadata
    from nova.virt import configdrive
    from nova.virt.libvirt import driver as libvirt_driver
    from nova.virt.libvirt import utils as libvirt_utils
    from oslo_concurrency import processutils
    from oslo_utils import excutils

    log = libvirt_driver.LOG
    instance.device_metadata = driver._build_device_metadata(context, instance)
    name = "disk.config" + (".rescue" if rescue else "")
    config_disk = driver.image_backend.by_name(instance, name,
                                               driver._get_disk_config_image_type())
    if config_disk.exists():
        raise FileExistsError(f"config drive {name} of instance {instance.uuid} already "
                              "exists; refusing to boot it without the launch nonce")
    extra_md = {"admin_pass": injection_info.admin_pass} if injection_info.admin_pass else {}
    inst_md = instance_metadata.InstanceMetadata(
        instance, content=injection_info.files, extra_md=extra_md,
        network_info=injection_info.network_info)
    local_path = os.path.join(libvirt_utils.get_instance_path(instance), name)
    log.info("Creating config drive with the trusted launch nonce at %(path)s",
             {"path": local_path}, instance=instance)
    builder = nonce_builder_class(configdrive.ConfigDriveBuilder)(inst_md, nonce, receipt,
                                                                  receipt_key)
    with builder:
        try:
            builder.make_drive(local_path)
        except processutils.ProcessExecutionError as exc:
            with excutils.save_and_reraise_exception():
                log.error("Creating config drive failed with error: %s", exc,
                          instance=instance)
    try:
        config_disk.import_file(instance, local_path, name)
    finally:
        if libvirt_driver.CONF.libvirt.images_type == "rbd":
            os.unlink(local_path)
