"""Encrypted images (LUKS qcow2) in Nova's functional harness, through the compute API.

Real parts as in :mod:`tests.nova.test_trusted_compute` (Nova 34, the TTP over
HTTPS, one swtpm per host, real tokens) plus a real LUKS qcow2 made by the
tenant tooling with the real ``qemu-img``, uploaded to the harness' Glance
fixture and cached by Nova's own download path; the host makes the guest's
encrypted root disk with the real ``qemu-img``. libvirt is fakelibvirt, which
records every secret defined and undefined.
"""

from __future__ import annotations

# Nova's functional package must be imported before anything imports eventlet.
import nova.tests.functional  # noqa: F401

# isort: split

import base64
import os
import pathlib
import shutil
from unittest import mock

import pytest
from lxml import etree
from nova.tests.fixtures import libvirt as fakelibvirt
from nova.tests.functional.libvirt import base as libvirt_base
from nova.virt import images

from tests.fixtures.swtpm import swtpm_state_cache  # noqa: F401
from tests.nova import test_trusted_compute as compute_tests
from tests.nova.base import HOST_ATTR
from tests.nova.trusted_env import running_environment
from trusted_launch.client.image_encryption import encrypt_image, write_new_key_file
from trusted_launch.client.launch_token import create_launch_token
from trusted_launch.compute.driver import OVERLAY_TEMPLATE_DIR
from trusted_launch.compute.encrypted_image import inspect_disk, secret_uuid_for
from trusted_launch.compute.nonce_injection import NONCE_PATH
from trusted_launch.crypto.digest import digest_file
from trusted_launch.crypto.image_key import luks_passphrase
from trusted_launch.crypto.nonce import read_nonce_file

pytestmark = [pytest.mark.swtpm,
              pytest.mark.skipif(shutil.which("qemu-img") is None,
                                 reason="qemu-img is not installed (bindep: qemu-utils)")]

MARKER = b"plaintext of the tenant's encrypted image "
PLAIN_IMAGE = MARKER * 4096 + bytes(1024 * 1024 - len(MARKER) * 4096 % (1024 * 1024))


@pytest.fixture(scope="module")
def trusted_env(tmp_path_factory, swtpm_state_cache):  # noqa: F811
    with running_environment(tmp_path_factory, swtpm_state_cache, compute_tests.HOST_LOGS,
                             "encrypted") as env:
        yield env


@pytest.fixture(scope="class")
def _bind_trusted_env(request, trusted_env) -> None:
    request.cls.env = trusted_env


@pytest.fixture(scope="module")
def encrypted_image(tmp_path_factory) -> tuple[bytes, bytes]:
    """(LUKS qcow2 bytes, image key), made by the tenant tooling."""
    directory = tmp_path_factory.mktemp("encrypted-image")
    (directory / "plain.raw").write_bytes(PLAIN_IMAGE)
    key = write_new_key_file(directory / "image.key")
    image = encrypt_image(directory / "plain.raw", directory / "enc.qcow2", key)
    return image.path.read_bytes(), key


@pytest.fixture(scope="class")
def _bind_encrypted_image(request, encrypted_image) -> None:
    request.cls.encrypted, request.cls.key = encrypted_image


def key_needles(key: bytes) -> list[bytes]:
    """Every encoding of the image key (and its passphrase) that must not appear anywhere."""
    hexed = key.hex().encode()
    return [key, hexed, hexed.upper(), base64.b64encode(key).rstrip(b"="),
            base64.urlsafe_b64encode(key).rstrip(b"="), base64.b64encode(hexed).rstrip(b"=")]


@pytest.mark.usefixtures("_bind_encrypted_image")
class EncryptedImageTest(compute_tests.TrustedComputeTestBase):
    """A tenant's LUKS qcow2 boots only with the key the TTP released to an attested host."""

    encrypted: bytes
    key: bytes

    def setUp(self) -> None:
        patcher = mock.patch.dict(os.environ, {"OS_DEBUG": "1"})  # debug logs are scanned
        patcher.start()
        self.addCleanup(patcher.stop)
        self.flags(force_raw_images=False)
        self.fetch_to_raw = False
        self.defined_xml: dict[str, str] = {}  # domain uuid -> the XML the driver defined
        original = fakelibvirt.Connection.defineXML

        def record(connection, xml):
            self.defined_xml[etree.fromstring(xml.encode()).findtext("uuid")] = xml
            return original(connection, xml)
        self.useFixture(compute_tests.fixtures.MockPatchObject(
            fakelibvirt.Connection, "defineXML", new=record))
        super().setUp()
        self.encrypted_id = self._create_image_of(self.encrypted, "qcow2")

    def _fake_create_image(self, context, instance, disk_mapping, *args, **kwargs):
        """As the base class, or through Nova's real ``fetch_to_raw`` (qemu-img) if asked."""
        if not self.fetch_to_raw:
            return super()._fake_create_image(context, instance, disk_mapping, *args, **kwargs)
        os.makedirs(self._instance_dir(instance.uuid), exist_ok=True)
        base = self._base_path(instance.image_ref)
        base.parent.mkdir(parents=True, exist_ok=True)
        images.fetch_to_raw(context, instance.image_ref, str(base))
        return False, False

    def _token(self, image: bytes, image_key: bytes | None) -> tuple[str, bytes]:
        directory = pathlib.Path(self.useFixture(compute_tests.fixtures.TempDir()).path)
        (directory / "image").write_bytes(image)
        token, nonce_path = create_launch_token(
            self.env.ttp_url, "high", digest_file(directory / "image", "sha512"),
            ca_file=str(self.env.ca.cert_file), nonce_dir=directory / "nonces",
            image_key=image_key)
        self.assertLessEqual(len(token), 255)
        return token, read_nonce_file(nonce_path)

    def _connection(self, host: str):
        return self.computes[host].driver._host.get_connection()

    def _root_disk_xml(self, server_id: str) -> etree._Element:
        """The root disk of the domain XML the driver last defined for ``server_id``."""
        xml = etree.fromstring(self.defined_xml[server_id].encode())
        root = str(self._instance_dir(server_id) / "disk")
        return next(d for d in xml.findall("./devices/disk")
                    if d.find("source") is not None and d.find("source").get("file") == root)

    def _assert_key_absent(self, haystack: bytes, where: str) -> None:
        for needle in key_needles(self.key):
            self.assertNotIn(needle, haystack, f"the image key appears in {where}")

    def _all_instance_files(self) -> bytes:
        chunks = []
        for path in pathlib.Path(libvirt_base.CONF.instances_path).rglob("*"):
            if path.is_file():
                chunks.append(path.read_bytes())
        return b"\n".join(chunks)

    # Tests -------------------------------------------------------------------------------
    def test_encrypted_image_boots_with_an_ephemeral_private_secret_and_leaves_no_key(
            self) -> None:
        token, nonce = self._token(self.encrypted, self.key)
        server = self._boot(token=token, image_id=self.encrypted_id)
        self.assertEqual("host-a", server[HOST_ATTR])
        connection = self._connection("host-a")
        secret_uuid = secret_uuid_for(server["id"])
        self.assertNotIn(secret_uuid, connection._secrets, "secret still defined after start")
        secret = connection._removed_secrets[secret_uuid]
        self.assertTrue(secret._ephemeral and secret._private)
        self.assertEqual(luks_passphrase(self.key), secret._value)
        disk_path = self._instance_dir(server["id"]) / "disk"
        self.assertEqual(str(disk_path), secret.usageID())
        disk = self._root_disk_xml(server["id"])
        base = self._base_path(self.encrypted_id)
        encryption = disk.find("source/encryption")
        self.assertEqual("luks", encryption.get("format"))
        self.assertEqual(("passphrase", secret_uuid),
                         (encryption.find("secret").get("type"),
                          encryption.find("secret").get("uuid")))
        backing = disk.find("backingStore/source")
        self.assertEqual(str(base), backing.get("file"))
        self.assertEqual(secret_uuid, backing.find("encryption/secret").get("uuid"))
        root = inspect_disk(disk_path)
        self.assertTrue(root.is_luks_qcow2)
        self.assertEqual(str(base), root.backing_file)
        self.assertEqual(self.encrypted, base.read_bytes())  # cached as uploaded: ciphertext
        templates = pathlib.Path(libvirt_base.CONF.instances_path,
                                 OVERLAY_TEMPLATE_DIR)
        self.assertEqual(1, len(list(templates.iterdir())))  # the disk is a template's copy
        files = self._all_instance_files()
        self.assertNotIn(MARKER, files)
        self._assert_key_absent(files, "the instances directory")
        self._assert_key_absent(self._config_drive_file(server["id"], NONCE_PATH),
                                "the config drive")
        self.assertEqual(nonce.hex().encode() + b"\n",
                         self._config_drive_file(server["id"], NONCE_PATH))
        self._assert_key_absent(self.defined_xml[server["id"]].encode(), "the domain XML")
        self._assert_key_absent(self.stdlog.logger.output.encode(), "Nova's logs")
        self._assert_key_absent(self.env.ttp.log().encode(), "the TTP's log")
        self._assert_key_absent(self._database_dump(), "Nova's databases")

    def test_hard_reboot_defines_the_secret_again_from_the_re_released_key(self) -> None:
        token, _nonce = self._token(self.encrypted, self.key)
        server = self._boot(token=token, image_id=self.encrypted_id)
        connection = self._connection("host-a")
        values: list[bytes] = []
        original = fakelibvirt.Secret.setValue

        def record(secret, value, flags=0):
            values.append(value)
            return original(secret, value, flags)
        with mock.patch.object(connection, "secretDefineXML",
                               wraps=connection.secretDefineXML) as define, \
                mock.patch.object(fakelibvirt.Secret, "setValue", new=record):
            self._reboot_server(server, hard=True)
        self.assertEqual(1, define.call_count)
        self.assertEqual([luks_passphrase(self.key)], values)
        self.assertNotIn(secret_uuid_for(server["id"]), connection._secrets)
        disk = self._root_disk_xml(server["id"])
        self.assertEqual(secret_uuid_for(server["id"]),
                         disk.find("source/encryption/secret").get("uuid"))
        self.assertIsNone(self.computes["host-a"].driver._image_keys.get(server["id"]))

    def test_token_without_the_key_goes_to_error(self) -> None:
        token, _nonce = self._token(self.encrypted, None)
        server = self._boot(token=token, image_id=self.encrypted_id, expected_state="ERROR")
        message = server["fault"]["message"]
        self.assertIn("image_encryption", message)
        self.assertIn("carries no image key", message)
        self.assertEqual([], self._connection("host-a").listAllSecrets(0))

    def test_key_for_a_plain_image_is_refused(self) -> None:
        token, _nonce = self._token(compute_tests.IMAGE_BYTES, self.key)
        server = self._boot(token=token, expected_state="ERROR")
        self.assertIn("not a LUKS-encrypted qcow2", server["fault"]["message"])
        self._assert_key_absent(str(server["fault"]).encode(), "the fault")

    def test_unattested_host_never_gets_the_key(self) -> None:
        token, _nonce = self._token(self.encrypted, self.key)
        server = self._boot(token=token, image_id=self.encrypted_id, host="host-b",
                            expected_state="ERROR")
        self.assertIn("profile_policy", server["fault"]["message"])
        connection = self._connection("host-b")
        self.assertEqual(({}, {}), (connection._secrets, connection._removed_secrets))
        self.assertFalse((self._instance_dir(server["id"]) / "disk").exists())
        self.assertIsNone(self.computes["host-b"].driver._image_keys.get(server["id"]))

    def test_host_that_would_convert_images_to_raw_refuses(self) -> None:
        self.flags(force_raw_images=True)
        token, _nonce = self._token(self.encrypted, self.key)
        server = self._boot(token=token, image_id=self.encrypted_id, expected_state="ERROR")
        self.assertIn("force_raw_images", server["fault"]["message"])
        self.assertFalse((self._instance_dir(server["id"]) / "disk").exists())

    def test_novas_raw_conversion_fails_with_the_setting_named_and_no_plaintext(self) -> None:
        """Nova's real fetch_to_raw (qemu-img) cannot convert the image without its key."""
        self.flags(force_raw_images=True)
        self.fetch_to_raw = True
        token, _nonce = self._token(self.encrypted, self.key)
        server = self._boot(token=token, image_id=self.encrypted_id, expected_state="ERROR")
        self.assertIn("needs [DEFAULT] force_raw_images = False", server["fault"]["message"])
        cached = list(self._base_path(self.encrypted_id).parent.glob("*"))
        self.assertEqual([], [p for p in cached if p.is_file()], "a converted image was left")
        self.assertNotIn(MARKER, self._all_instance_files())
