"""The host side of encrypted images with the real qemu-img: disks, XML, secrets."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from lxml import etree

from trusted_launch.client.image_encryption import encrypt_image
from trusted_launch.compute import encrypted_image
from trusted_launch.compute.encrypted_image import (
    DiskInfo,
    EncryptedRoot,
    ImageEncryptionRefused,
    add_disk_encryption,
    check_host_settings,
    check_key_matches,
    defined_secret,
    inspect_disk,
    prepare_root_disk,
    secret_uuid_for,
)
from trusted_launch.crypto.image_key import luks_passphrase, new_image_key

needs_qemu_img = pytest.mark.skipif(shutil.which("qemu-io") is None,
                                    reason="qemu-img/qemu-io not installed (qemu-utils)")
INSTANCE = "7d6f3e52-3c1b-4d0e-9b7a-1f2e3d4c5b6a"
MARKER = b"guest data that must stay encrypted"


@pytest.fixture
def base(tmp_path) -> tuple[DiskInfo, bytes]:
    (tmp_path / "plain.raw").write_bytes(bytes(4 * 1024 * 1024))
    key = new_image_key()
    image = encrypt_image(tmp_path / "plain.raw", tmp_path / "base", key)
    return inspect_disk(image.path), key


def qemu_io(disk: str, key: bytes, command: str) -> subprocess.CompletedProcess:
    read_fd, write_fd = os.pipe()
    os.write(write_fd, luks_passphrase(key))
    os.close(write_fd)
    try:
        return subprocess.run(
            ["qemu-io", "--object", f"secret,id=s0,file=/dev/fd/{read_fd}", "--image-opts",
             f"driver=qcow2,file.filename={disk},encrypt.key-secret=s0,"
             "backing.encrypt.key-secret=s0", "-c", command],
            capture_output=True, text=True, pass_fds=(read_fd,), timeout=60, check=False)
    finally:
        os.close(read_fd)


@needs_qemu_img
def test_root_overlay_is_luks_and_guest_writes_stay_ciphertext(tmp_path, base) -> None:
    info, key = base
    assert info.is_luks_qcow2
    root = prepare_root_disk(tmp_path / "disk", info, key, INSTANCE)
    disk = inspect_disk(root.disk_path)
    assert disk.is_luks_qcow2 and disk.backing_file == info.path
    assert (root.backing_path, root.secret_uuid) == (info.path, secret_uuid_for(INSTANCE))
    pattern = "write -P 0x5a 0 1M"
    assert qemu_io(root.disk_path, key, pattern).returncode == 0
    assert qemu_io(root.disk_path, key, "read -P 0x5a 0 1M").returncode == 0
    assert b"\x5a" * 4096 not in (tmp_path / "disk").read_bytes()
    wrong = qemu_io(root.disk_path, new_image_key(), "read 0 1M")
    assert "Invalid password" in wrong.stdout + wrong.stderr
    again = prepare_root_disk(tmp_path / "disk", info, key, INSTANCE)  # kept, not remade
    assert again == root
    assert qemu_io(root.disk_path, key, "read -P 0x5a 0 1M").returncode == 0


@needs_qemu_img
def test_root_disks_are_copies_of_one_template_per_key_and_keep_writes_apart(
        tmp_path, base) -> None:
    info, key = base
    templates = tmp_path / "templates"
    first = prepare_root_disk(tmp_path / "a", info, key, INSTANCE, template_dir=templates)
    second = prepare_root_disk(tmp_path / "b", info, key, "other-instance",
                               template_dir=templates)
    assert len(list(templates.iterdir())) == 1  # the LUKS header was written once
    for root in (first, second):
        disk = inspect_disk(root.disk_path)
        assert disk.is_luks_qcow2 and disk.backing_file == info.path
    assert qemu_io(first.disk_path, key, "write -P 0x5a 0 1M").returncode == 0
    assert qemu_io(second.disk_path, key, "read -P 0x5a 0 1M").returncode != 0  # own writes
    assert qemu_io(first.disk_path, new_image_key(), "read 0 1M").returncode != 0
    name = next(templates.iterdir()).name
    assert key.hex() not in name and key.hex()[:16] not in name
    prepare_root_disk(tmp_path / "c", info, new_image_key(), INSTANCE, template_dir=templates)
    assert len(list(templates.iterdir())) == 2  # another key never reuses a template
    with pytest.raises(FileExistsError):  # a copy never lands on an existing file
        encrypted_image._copy_exclusive(next(templates.iterdir()), str(tmp_path / "a"))


@needs_qemu_img
def test_plain_overlay_is_replaced_and_other_disks_are_refused(tmp_path, base) -> None:
    info, key = base
    disk = tmp_path / "disk"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", info.path,
                    str(disk), str(8 * 1024 * 1024)], check=True)
    root = prepare_root_disk(disk, info, key, INSTANCE)
    replaced = inspect_disk(root.disk_path)
    assert replaced.is_luks_qcow2 and replaced.virtual_size == 8 * 1024 * 1024
    other = tmp_path / "other"
    other.write_bytes(MARKER)
    with pytest.raises(ImageEncryptionRefused, match="refusing to replace it"):
        prepare_root_disk(other, info, key, INSTANCE)
    assert other.read_bytes() == MARKER


@needs_qemu_img
def test_key_and_image_must_agree(tmp_path, base) -> None:
    info, key = base
    with pytest.raises(ImageEncryptionRefused, match="carries no image key"):
        check_key_matches(info, None)
    raw = tmp_path / "raw"
    raw.write_bytes(MARKER)
    with pytest.raises(ImageEncryptionRefused, match="not a LUKS-encrypted qcow2") as caught:
        check_key_matches(inspect_disk(raw), key)
    assert key.hex() not in str(caught.value)
    assert check_key_matches(info, key) is True
    assert check_key_matches(inspect_disk(raw), None) is False


def test_host_settings_that_would_decrypt_or_copy_are_refused() -> None:
    check_host_settings(force_raw_images=False, images_type="qcow2", use_cow_images=False)
    check_host_settings(force_raw_images=False, images_type="default", use_cow_images=True)
    with pytest.raises(ImageEncryptionRefused, match="force_raw_images = True"):
        check_host_settings(force_raw_images=True, images_type="qcow2", use_cow_images=True)
    for images_type, cow in (("raw", True), ("rbd", True), ("default", False)):
        with pytest.raises(ImageEncryptionRefused, match="images_type"):
            check_host_settings(force_raw_images=False, images_type=images_type,
                                use_cow_images=cow)


NOVA_DISK_XML = """<domain type='kvm'><uuid>{uuid}</uuid><devices>
  <disk type='file' device='cdrom'><source file='/i/disk.config'/><target dev='sda'/></disk>
  <disk type='file' device='disk'><driver name='qemu' type='qcow2' cache='none'/>
    <source file='/i/disk'/><target dev='vda' bus='virtio'/></disk>
</devices></domain>"""


def test_domain_xml_gets_luks_encryption_for_disk_and_backing_store() -> None:
    key = new_image_key()
    root = EncryptedRoot(key, "/i/disk", "/b/_base/abc", secret_uuid_for(INSTANCE))
    xml = add_disk_encryption(NOVA_DISK_XML.format(uuid=INSTANCE), root)
    disk = etree.fromstring(xml.encode()).find("./devices/disk[@device='disk']")
    secret = disk.find("source/encryption[@format='luks']/secret")
    assert (secret.get("type"), secret.get("uuid")) == ("passphrase", root.secret_uuid)
    backing = disk.find("backingStore")
    assert backing.find("format").get("type") == "qcow2"
    assert backing.find("source").get("file") == "/b/_base/abc"
    assert backing.find("source/encryption/secret").get("uuid") == root.secret_uuid
    assert backing.find("backingStore") is not None  # the chain ends here
    assert key.hex() not in xml and luks_passphrase(key).decode() not in xml
    assert add_disk_encryption(xml, root) == xml  # idempotent
    with pytest.raises(ImageEncryptionRefused, match="no disk for the encrypted root disk"):
        add_disk_encryption(NOVA_DISK_XML.format(uuid=INSTANCE),
                            EncryptedRoot(key, "/elsewhere/disk", "/b", root.secret_uuid))


class RecordingConnection:
    """Records what the driver asks of libvirt's secret API (libvirt itself: integration)."""

    def __init__(self) -> None:
        self.defined: list[str] = []
        self.values: list[bytes] = []
        self.undefined = 0
        self.live: list[RecordingSecret] = []

    def secretDefineXML(self, xml: str):
        self.defined.append(xml)
        secret = RecordingSecret(self, etree.fromstring(xml).findtext("uuid"))
        self.live.append(secret)
        return secret

    def listAllSecrets(self, flags: int):
        return list(self.live)


class RecordingSecret:
    def __init__(self, connection: RecordingConnection, uuid: str) -> None:
        self.connection, self.uuid = connection, uuid

    def setValue(self, value: bytes) -> None:
        self.connection.values.append(value)

    def undefine(self) -> None:
        self.connection.undefined += 1
        self.connection.live.remove(self)

    def UUIDString(self) -> str:
        return self.uuid


def test_secret_is_ephemeral_private_and_undefined_even_on_failure() -> None:
    key = new_image_key()
    root = EncryptedRoot(key, "/i/disk", "/b", secret_uuid_for(INSTANCE))
    connection = RecordingConnection()
    connection.secretDefineXML(f"<secret><uuid>{root.secret_uuid}</uuid></secret>")  # stale
    with pytest.raises(RuntimeError), defined_secret(connection, root):
        assert connection.values == [luks_passphrase(key)]
        raise RuntimeError("qemu failed to start")
    assert connection.live == [] and connection.undefined == 2
    element = etree.fromstring(connection.defined[-1])
    assert (element.get("ephemeral"), element.get("private")) == ("yes", "yes")
    assert element.findtext("usage/volume") == "/i/disk"
    assert key.hex() not in connection.defined[-1]


def test_held_keys_are_hidden_from_repr() -> None:
    key = new_image_key()
    root = EncryptedRoot(key, "/i/disk", "/b", secret_uuid_for(INSTANCE))
    for text in (repr(root), repr({INSTANCE: root})):  # as the driver holds them
        assert key.hex() not in text and repr(key) not in text


def test_base_disk_info_is_inspected_once_until_the_file_changes(tmp_path, base) -> None:
    info, _key = base
    infos = encrypted_image.BaseDiskInfos()
    first = infos.inspect(info.path)
    assert first.is_luks_qcow2 and infos.inspected == 1
    assert infos.inspect(info.path) == first and infos.inspected == 1  # remembered
    plain = tmp_path / "plain.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(plain), "1M"], check=True)
    shutil.copyfile(plain, info.path)  # the same path now holds another (plain) image
    changed = infos.inspect(info.path)
    assert infos.inspected == 2 and not changed.is_luks_qcow2
