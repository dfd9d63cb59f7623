"""A real libvirt + QEMU (TCG) start of the encrypted root disk the driver prepares.

The tenant tooling encrypts an image; :mod:`trusted_launch.compute.encrypted_image`
makes the LUKS overlay and adds the ``<encryption>`` elements to a domain XML
shaped like Nova's; the secret is defined ephemeral and private through
``virsh`` with its value from a pipe. The domain starts with the right key and
does not start with a wrong one. Skipped (with the reason) when libvirtd,
virsh or qemu-system-x86_64 are not installed.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import tempfile
import uuid

import pytest

from tests.fixtures.libvirt import running_libvirtd, virsh
from trusted_launch.client.image_encryption import encrypt_image, write_new_key_file
from trusted_launch.compute.encrypted_image import (
    EncryptedRoot,
    add_disk_encryption,
    inspect_disk,
    prepare_root_disk,
)
from trusted_launch.crypto.image_key import luks_passphrase

TOOLS = ("qemu-img", "virsh", "libvirtd", "virtlogd", "qemu-system-x86_64")
MISSING = [tool for tool in TOOLS if shutil.which(tool) is None]
pytestmark = pytest.mark.skipif(bool(MISSING), reason=f"not installed: {', '.join(MISSING)} "
                                "(apt: libvirt-daemon-system qemu-system-x86 qemu-utils)")
DOMAIN_XML = """<domain type='qemu'>
  <name>{name}</name><uuid>{uuid}</uuid><memory unit='MiB'>64</memory><vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='none'/>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <serial type='pty'/>
  </devices>
</domain>"""



@pytest.fixture(scope="session")
def libvirtd():
    """The host's libvirtd; started here (and stopped afterwards) if none runs."""
    with running_libvirtd():
        yield


def define_secret(root: EncryptedRoot, key: bytes, tmp_path: pathlib.Path) -> None:
    """virsh secret-define (ephemeral, private) and secret-set-value from a pipe."""
    xml = tmp_path / "secret.xml"
    xml.write_text(f"<secret ephemeral='yes' private='yes'><uuid>{root.secret_uuid}</uuid>"
                   f"<usage type='volume'><volume>{root.disk_path}</volume></usage></secret>")
    assert virsh("secret-define", str(xml)).returncode == 0
    read_fd, write_fd = os.pipe()
    os.write(write_fd, luks_passphrase(key))
    os.close(write_fd)
    try:
        result = virsh("secret-set-value", root.secret_uuid, "--file", f"/dev/fd/{read_fd}",
                       "--plain", pass_fds=(read_fd,))
    finally:
        os.close(read_fd)
    assert result.returncode == 0, result.stderr


def start_domain(tmp_path: pathlib.Path, root: EncryptedRoot, key: bytes
                 ) -> subprocess.CompletedProcess:
    """Define, start (and afterwards destroy) a domain on ``root``, secret set to ``key``."""
    name = f"tl-encrypted-{uuid.uuid4().hex[:8]}"
    xml = add_disk_encryption(DOMAIN_XML.format(name=name, uuid=uuid.uuid4(),
                                                disk=root.disk_path), root)
    (tmp_path / "domain.xml").write_text(xml)
    define_secret(root, key, tmp_path)
    try:
        assert virsh("define", str(tmp_path / "domain.xml")).returncode == 0
        return virsh("start", name)
    finally:
        virsh("secret-undefine", root.secret_uuid)
        virsh("destroy", name)
        virsh("undefine", name)


@pytest.fixture
def qemu_dir():
    """A directory QEMU (uid libvirt-qemu) can reach; pytest's tmp_path is 0700."""
    path = pathlib.Path(tempfile.mkdtemp(prefix="tl-encrypted-", dir="/var/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def encrypted_root(qemu_dir) -> tuple[EncryptedRoot, bytes]:
    tmp_path = qemu_dir
    (tmp_path / "plain.raw").write_bytes(b"boot sector" + bytes(16 * 1024 * 1024))
    key = write_new_key_file(tmp_path / "image.key")
    image = encrypt_image(tmp_path / "plain.raw", tmp_path / "base.qcow2", key)
    root = prepare_root_disk(tmp_path / "disk", inspect_disk(image.path), key, str(uuid.uuid4()))
    for path in (image.path, pathlib.Path(root.disk_path)):
        path.chmod(0o666)
    return root, key


@pytest.mark.usefixtures("libvirtd")
def test_domain_starts_with_the_right_key_only(tmp_path, encrypted_root) -> None:
    root, key = encrypted_root
    wrong = start_domain(tmp_path, root, os.urandom(len(key)))
    assert wrong.returncode != 0
    assert "password" in wrong.stderr.lower() or "secret" in wrong.stderr.lower(), wrong.stderr
    right = start_domain(tmp_path, root, key)
    assert right.returncode == 0, right.stderr
    assert virsh("secret-list").stdout.count(root.secret_uuid) == 0
