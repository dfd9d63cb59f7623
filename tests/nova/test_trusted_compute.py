"""TrustedLibvirtDriver in Nova's libvirt functional harness, through the compute API.

Real parts: Nova 34 (API, conductor, scheduler with SecurityProfileFilter,
two nova-compute services loading our driver through
``nova.virt.driver.load_compute_driver`` and the ``nova.virt.trusted_launch``
shim), one swtpm per compute host booted from a real firmware event log, the
real TTP over HTTPS, real enrollment, real tokens, a real ISO 9660 config
drive (genisoimage) and the real guest agent. Faked, as in Nova's own
libvirt tests: libvirt itself (fakelibvirt), the image backend, Glance
(GlanceFixture, here with real image bytes) and ``_create_image``, whose fake
below caches the base image exactly where LibvirtDriver does
(``<instances_path>/_base/<sha1(image id)>``) through Nova's own download
path ``nova.virt.images.fetch`` (qemu-img is not installed here, so the
format inspection and raw conversion of ``fetch_to_raw`` are skipped).
"""

from __future__ import annotations

# Nova's functional package must be imported before anything imports eventlet
# (it forbids eventlet when OS_NOVA_DISABLE_EVENTLET_PATCHING is set).
import nova.tests.functional  # noqa: F401

# isort: split

import base64
import hashlib
import json
import os
import pathlib
import re
import threading
import uuid
from unittest import mock

import fixtures
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from nova import context as nova_context
from nova import objects
from nova.compute import provider_tree
from nova.db.api import api as api_db_api
from nova.db.main import api as main_db_api
from nova.tests.fixtures import libvirt as fakelibvirt
from nova.virt.libvirt import driver as libvirt_driver
from sqlalchemy import MetaData, select

from tests.fixtures.swtpm import swtpm_state_cache  # noqa: F401
from tests.nova.base import HOST_ATTR
from tests.nova.trusted_env import (
    NO_SECURE_BOOT_LOG,
    SECUREBOOT_LOG,
    running_environment,
)
from trusted_launch.client.challenge import verify_vm
from trusted_launch.client.errors import VMVerificationFailed
from trusted_launch.compute.driver import (
    TrustedLibvirtDriver,
    profile_traits,
    trusted_launch_request,
)
from trusted_launch.compute.image_digest import BaseImageDigests, BaseImageMissing, sidecar_path
from trusted_launch.compute.nonce_injection import NONCE_PATH, RECEIPT_PATH, PendingNonces
from trusted_launch.crypto.receipt import read_unverified
from trusted_launch.guest import identity as guest_identity
from trusted_launch.guest.agent import ChallengeServer
from trusted_launch.sandbox.nova_harness import (  # noqa: F401 - used by other test modules
    BOOT_WAIT_POLLS,
    DRIVER,
    IMAGE_BYTES,
    TrustedNovaTestCase,
)

pytestmark = [pytest.mark.swtpm]

HOST_LOGS = {"host-a": SECUREBOOT_LOG, "host-b": NO_SECURE_BOOT_LOG}
HOST_PROFILES = TrustedNovaTestCase.HOST_PROFILES


@pytest.fixture(scope="module")
def trusted_env(tmp_path_factory, swtpm_state_cache):  # noqa: F811
    """The TTP and two enrolled swtpm hosts, shared by every test of this module."""
    with running_environment(tmp_path_factory, swtpm_state_cache, HOST_LOGS, "nova") as env:
        yield env


@pytest.fixture(scope="class")
def _bind_trusted_env(request, trusted_env) -> None:
    request.cls.env = trusted_env


def needles(nonce: bytes) -> list[bytes]:
    """Every encoding of N that must not appear anywhere."""
    return [nonce, nonce.hex().encode(), nonce.hex().upper().encode(),
            base64.b64encode(nonce).rstrip(b"="), base64.urlsafe_b64encode(nonce).rstrip(b"=")]


def assert_absent(testcase, nonce: bytes, haystack: bytes, where: str) -> None:
    for needle in needles(nonce):
        testcase.assertNotIn(needle, haystack, f"the launch nonce appears in {where}")


@pytest.mark.usefixtures("_bind_trusted_env")
class TrustedComputeTestBase(TrustedNovaTestCase):
    """Two libvirt computes running TrustedLibvirtDriver, each with its own swtpm."""

    def _database_dump(self) -> bytes:
        """Every row of every table of the API database and every cell database."""
        ctxt = nova_context.get_admin_context()
        engines = [api_db_api.get_engine()]
        for mapping in objects.CellMappingList.get_all(ctxt):
            with nova_context.target_cell(ctxt, mapping) as cctxt:
                engines.append(main_db_api.get_engine(context=cctxt))
        chunks = []
        for engine in engines:
            metadata = MetaData()
            metadata.reflect(engine)
            with engine.connect() as connection:
                for table in metadata.sorted_tables:
                    for row in connection.execute(select(table)):
                        chunks.extend(v if isinstance(v, bytes) else str(v).encode()
                                      for v in row)
        return b"\n".join(chunks)


class TrustedLaunchTest(TrustedComputeTestBase):
    """Launches through the compute API: success, refusals, the untouched plain path."""

    def test_driver_is_loaded_by_novas_own_loader(self) -> None:
        for host in HOST_LOGS:
            driver = self.computes[host].driver
            self.assertIs(TrustedLibvirtDriver, type(driver))
            self.assertIsNotNone(driver.trusted_host, driver.not_ready_reason)

    def test_trusted_launch_goes_active_with_nonce_only_on_config_drive(self) -> None:
        token, nonce = self.env.make_token("high", IMAGE_BYTES)
        server = self._boot(token=token)
        self.assertEqual("host-a", server[HOST_ATTR])
        self.assertEqual("True", server["config_drive"])
        on_drive = self._config_drive_file(server["id"], NONCE_PATH)
        self.assertEqual(nonce.hex().encode() + b"\n", on_drive)
        _key_id, receipt = read_unverified(
            self._config_drive_file(server["id"], RECEIPT_PATH))
        self.assertEqual(("trusted", server["id"], "host-a"),
                         (receipt.verdict, receipt.launch_id, receipt.host))
        dump = self._database_dump()
        self.assertIn(server["id"].encode(), dump)  # the dump does see this instance
        assert_absent(self, nonce, dump, "Nova's databases")
        domains = self.computes["host-a"].driver._host.get_connection().listAllDomains(
            fakelibvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
        self.assertEqual(1, len(domains))
        xml = domains[0].XMLDesc(0).encode()
        self.assertIn(b"disk.config", xml)
        assert_absent(self, nonce, xml, "the domain XML")
        notifications = json.dumps([self.notifier.versioned_notifications,
                                    [n.payload for n in self.notifier.notifications]],
                                   default=str).encode()
        assert_absent(self, nonce, notifications, "notifications")

    def test_base_image_digest_is_computed_once_per_cached_image(self) -> None:
        for _ in range(2):
            token, _nonce = self.env.make_token("high", IMAGE_BYTES)
            self._boot(token=token, host="host-a")
        driver = self.computes["host-a"].driver
        self.assertEqual(1, driver.base_image_digests.computed)
        sidecar = sidecar_path(self._base_path(self.image_id), "sha256")
        recorded = json.loads(sidecar.read_text())["digest"]
        self.assertEqual(f"sha256:{hashlib.sha256(IMAGE_BYTES).hexdigest()}", recorded)

    def test_host_failing_the_profile_goes_to_error_with_the_reason(self) -> None:
        token, nonce = self.env.make_token("high", IMAGE_BYTES)
        server = self._boot(token=token, host="host-b", expected_state="ERROR")
        message = server["fault"]["message"]
        self.assertIn("profile_policy", message)
        self.assertIn("Secure Boot", message)
        self.assertFalse((self._instance_dir(server["id"]) / "disk.config").exists())
        assert_absent(self, nonce, json.dumps(server).encode(), "the server")

    def test_image_changed_after_token_goes_to_error(self) -> None:
        changed = self._create_image_of(IMAGE_BYTES + b"tampered")
        token, nonce = self.env.make_token("high", IMAGE_BYTES)
        server = self._boot(token=token, image_id=changed, host="host-a",
                            expected_state="ERROR")
        message = server["fault"]["message"]
        self.assertIn("image_digest_mismatch", message)
        self.assertIn(hashlib.sha256(IMAGE_BYTES + b"tampered").hexdigest()[:16], message)
        self.assertFalse((self._instance_dir(server["id"]) / "disk.config").exists())
        assert_absent(self, nonce, json.dumps(server).encode(), "the server")

    def test_ttp_down_goes_to_error_with_a_clear_fault(self) -> None:
        token, _nonce = self.env.make_token("high", IMAGE_BYTES)
        server = self._boot(token=token, ttp_url=self.env.closed_port_url,
                            expected_state="ERROR")
        message = server["fault"]["message"]
        self.assertIn("ttp_unreachable", message)
        self.assertIn(self.env.closed_port_url, message)

    def test_ttp_not_on_allow_list_is_refused_before_any_connection(self) -> None:
        token, _nonce = self.env.make_token("high", IMAGE_BYTES)
        server = self._boot(token=token, ttp_url="https://ttp.invalid:9443",
                            expected_state="ERROR")
        self.assertIn("ttp_not_allowed", server["fault"]["message"])

    def test_incomplete_trusted_properties_are_refused(self) -> None:
        server = self._build_server(image_uuid=self.image_id, networks="none")
        server["metadata"] = {"trusted_sp": "high", "trusted_ttp": self.env.ttp_url}
        created = self.api.post_server({"server": server})
        server = self._wait_for_state_change(created, "ERROR")
        self.assertIn("trusted_token is missing", server["fault"]["message"])

    def test_replayed_token_is_refused(self) -> None:
        token, _nonce = self.env.make_token("high", IMAGE_BYTES)
        self._boot(token=token)
        server = self._boot(token=token, expected_state="ERROR")
        self.assertIn("token_replayed", server["fault"]["message"])

    def test_server_without_trusted_properties_boots_as_before(self) -> None:
        server = self._boot(host="host-b")
        self.assertEqual("host-b", server[HOST_ATTR])
        self.assertEqual("", server["config_drive"])
        self.assertFalse((self._instance_dir(server["id"]) / "disk.config").exists())
        self.assertEqual(0, self.computes["host-b"].driver.base_image_digests.computed)

    def test_guest_agent_with_config_drive_nonce_passes_the_challenge(self) -> None:
        token, nonce = self.env.make_token("high", IMAGE_BYTES)
        server = self._boot(token=token)
        mount = pathlib.Path(self.useFixture(fixtures.TempDir()).path)
        self._mount_config_drive(server["id"], mount)
        key_file = mount / "ssh_host_ed25519_key.pub"
        key_file.write_bytes(ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH))
        with mock.patch.object(guest_identity, "CONFIG_DRIVE_MOUNTS", (str(mount),)):
            nonce_file = guest_identity.default_nonce_file()  # where the agent looks
            meta_data = guest_identity.default_meta_data()
        self.assertEqual(mount / "trusted_launch" / "nonce", nonce_file)
        identity = guest_identity.load_identity(
            nonce_file=nonce_file, server_id=guest_identity.server_id_from_meta_data(meta_data),
            ssh_host_key=key_file)
        self.assertEqual(server["id"], identity.server_id)
        agent = ChallengeServer(("127.0.0.1", 0), identity)
        thread = threading.Thread(target=agent.serve_forever, daemon=True)
        thread.start()
        self.addCleanup(thread.join, 5)
        self.addCleanup(agent.server_close)
        self.addCleanup(agent.shutdown)
        address = f"127.0.0.1:{agent.server_address[1]}"
        verified = verify_vm(address, server["id"], nonce)
        self.assertEqual(identity.ssh_host_key_fingerprint, verified.ssh_host_key_fingerprint)
        self.assertRaises(VMVerificationFailed, verify_vm, address, server["id"],
                          bytes(32))


class ProviderTraitsTest(TrustedComputeTestBase):
    """CUSTOM_TRUSTED_SP_* traits: this host's profile and weaker ones, nothing stale."""

    def _traits(self, host: str) -> set[str]:
        return set(self._get_provider_traits(self.compute_rp_uuids[host]))

    def test_hosts_report_their_profile_and_weaker_ones(self) -> None:
        self.assertLessEqual({"CUSTOM_TRUSTED_SP_HIGH", "CUSTOM_TRUSTED_SP_MEDIUM",
                              "CUSTOM_TRUSTED_SP_LOW"}, self._traits("host-a"))
        host_b = {t for t in self._traits("host-b") if t.startswith("CUSTOM_TRUSTED_SP_")}
        self.assertEqual({"CUSTOM_TRUSTED_SP_LOW"}, host_b)

    def test_stale_profile_traits_are_removed_and_others_kept(self) -> None:
        driver = self.computes["host-a"].driver
        tree = provider_tree.ProviderTree()
        tree.new_root("host-a", str(uuid.uuid4()))
        tree.add_traits("host-a", "CUSTOM_TRUSTED_SP_ULTRA", "CUSTOM_OTHER_TEAM")
        with mock.patch.object(libvirt_driver.LibvirtDriver, "update_provider_tree"):
            driver.update_provider_tree(tree, "host-a")
        traits = tree.data("host-a").traits
        self.assertNotIn("CUSTOM_TRUSTED_SP_ULTRA", traits)
        self.assertIn("CUSTOM_OTHER_TEAM", traits)
        self.assertIn("CUSTOM_TRUSTED_SP_HIGH", traits)

    def test_host_that_is_not_ready_reports_no_profile_trait(self) -> None:
        driver = self.computes["host-a"].driver
        tree = provider_tree.ProviderTree()
        tree.new_root("host-a", str(uuid.uuid4()))
        tree.add_traits("host-a", "CUSTOM_TRUSTED_SP_HIGH")
        with mock.patch.object(driver, "trusted_host", None), \
                mock.patch.object(libvirt_driver.LibvirtDriver, "update_provider_tree"):
            driver.update_provider_tree(tree, "host-a")
        self.assertNotIn("CUSTOM_TRUSTED_SP_HIGH", tree.data("host-a").traits)


class NonceStaysOutOfLogsTest(TrustedComputeTestBase):
    """Debug logs of every service (Nova's and ours) and the TTP's log never show N."""

    def setUp(self) -> None:
        patcher = mock.patch.dict(os.environ, {"OS_DEBUG": "1"})
        patcher.start()
        self.addCleanup(patcher.stop)
        super().setUp()

    def test_logs_do_not_contain_the_nonce(self) -> None:
        token, nonce = self.env.make_token("high", IMAGE_BYTES)
        server = self._boot(token=token)
        self.assertEqual(nonce.hex().encode() + b"\n",
                         self._config_drive_file(server["id"], NONCE_PATH))
        refused_token, refused_nonce = self.env.make_token("high", IMAGE_BYTES)
        self._boot(token=refused_token, host="host-b", expected_state="ERROR")
        logs = self.stdlog.logger.output.encode()
        self.assertIn(b"trusted launch checks passed", logs)  # our debug/info lines are here
        # One INFO line per launch with the protocol's total and its steps (no secret):
        # what bench_cloud reads from a real nova-compute log.
        passed = re.search(rb"trusted launch checks passed in ([0-9.]+) ms \(([^)]*)\), of "
                           rb"which ([0-9.]+) ms in spawn's path", logs)
        self.assertIsNotNone(passed)
        total, in_spawn = float(passed.group(1)), float(passed.group(3))
        steps = {name.decode(): float(ms) for name, ms in
                 re.findall(rb"([a-z_]+) ([0-9.]+) ms", passed.group(2))}
        self.assertLessEqual({"ttp", "certify", "decrypt", "attestation_wait", "image_digest",
                              "encrypted_image"}, set(steps))
        # The attestation's steps ran in a worker while spawn made the disks; spawn waited
        # for their end (attestation_wait), then for the steps that need the image.
        serial = sum(ms for name, ms in steps.items() if name != "attestation_wait")
        self.assertGreaterEqual(total + 1, serial)
        self.assertGreaterEqual(in_spawn + 1, steps["attestation_wait"] + steps["decrypt"]
                                + steps["image_digest"] + steps["encrypted_image"])
        self.assertGreaterEqual(total + 1, in_spawn)
        self.assertIn(server["id"].encode(), logs)
        for secret in (nonce, refused_nonce):
            assert_absent(self, secret, logs, "Nova's logs")
            assert_absent(self, secret, self.env.ttp.log().encode(), "the TTP's log")


class HostNotReadyTest(TrustedComputeTestBase):
    """A host whose TPM or AK certificate was unusable at start refuses trusted launches."""

    def test_unready_host_refuses_with_the_reason(self) -> None:
        driver = self.computes["host-a"].driver
        saved = driver.trusted_host, driver.not_ready_reason
        driver.trusted_host, driver.not_ready_reason = None, "TPMUnavailable: swtpm gone"
        self.addCleanup(setattr, driver, "trusted_host", saved[0])
        self.addCleanup(setattr, driver, "not_ready_reason", saved[1])
        token, _nonce = self.env.make_token("high", IMAGE_BYTES)
        server = self._boot(token=token, host="host-a", expected_state="ERROR")
        self.assertIn("not available on this host: TPMUnavailable: swtpm gone",
                      server["fault"]["message"])

    def test_missing_ak_certificate_leaves_host_not_ready_but_plain_boots_work(self) -> None:
        self.flags(ak_certificate_file=str(self.env.directory / "absent.pem"),
                   group="trusted_launch")
        self.start_compute(hostname="host-c")
        driver = self.computes["host-c"].driver
        self.assertIsNone(driver.trusted_host)
        self.assertIn("absent.pem", driver.not_ready_reason)
        server = self._boot(host="host-c")
        self.assertEqual("host-c", server[HOST_ATTR])


# Building blocks of the driver, without Nova's harness --------------------------------
def test_base_image_digest_is_remembered_until_the_file_changes(tmp_path) -> None:
    base = tmp_path / "0123abcd"
    base.write_bytes(b"first image")
    digests = BaseImageDigests()
    first = digests.digest(base, "sha512")
    assert first.value == hashlib.sha512(b"first image").digest()
    assert digests.digest(base, "sha512") == first and digests.computed == 1
    assert BaseImageDigests().digest(base, "sha512") == first  # from the sidecar
    base.write_bytes(b"other image")
    assert digests.digest(base, "sha512").value == hashlib.sha512(b"other image").digest()
    assert digests.computed == 2


def test_forged_sidecar_for_another_file_state_is_ignored(tmp_path) -> None:
    base = tmp_path / "0123abcd"
    base.write_bytes(b"image")
    sidecar = sidecar_path(base, "sha256")
    sidecar.write_text(json.dumps({"file": {"device": 0, "inode": 0, "size": 5,
                                            "mtime_ns": 0, "ctime_ns": 0},
                                   "digest": "sha256:" + "00" * 32}))
    digests = BaseImageDigests()
    assert digests.digest(base, "sha256").value == hashlib.sha256(b"image").digest()
    sidecar.write_text("not json")
    assert BaseImageDigests().digest(base, "sha256").value == hashlib.sha256(b"image").digest()


def test_missing_base_image_is_a_specific_error(tmp_path) -> None:
    with pytest.raises(BaseImageMissing, match="no cached base image"):
        BaseImageDigests().digest(tmp_path / "absent", "sha256")


def test_trusted_launch_request_needs_token_and_ttp() -> None:
    assert trusted_launch_request({"trusted_sp": "high"}) is None
    request = trusted_launch_request({"trusted_token": "tok3n", "trusted_ttp": "https://t"})
    assert request.ttp_url == "https://t" and "tok3n" not in repr(request)
    with pytest.raises(ValueError, match="trusted_ttp is missing"):
        trusted_launch_request({"trusted_token": "T"})


def test_profile_traits_cover_weaker_profiles() -> None:
    profiles = ["low", "medium", "high"]
    assert profile_traits("medium", profiles) == {"CUSTOM_TRUSTED_SP_LOW",
                                                  "CUSTOM_TRUSTED_SP_MEDIUM"}
    assert profile_traits("pci-dss", profiles) == {"CUSTOM_TRUSTED_SP_PCI_DSS"}
    assert profile_traits(None, profiles) == set()


def test_pending_nonces_hide_their_content() -> None:
    pending = PendingNonces()
    nonce = bytes(range(32))
    pending.put("u", nonce)
    assert nonce.hex() not in repr(pending) and "u" in pending
    assert pending.pop("u") == nonce and pending.pop("u") is None
    with pytest.raises(ValueError):
        pending.put("u", b"short")


def test_shim_is_installed_in_novas_package_and_loadable() -> None:
    import nova.virt
    from nova.virt import driver as virt_driver

    shim = pathlib.Path(nova.virt.__path__[0]) / "trusted_launch" / "driver.py"
    assert shim.exists(), "run tools/setup.sh (or pip install .) to install the Nova shim"
    with mock.patch.object(TrustedLibvirtDriver, "__init__", return_value=None) as init:
        loaded = virt_driver.load_compute_driver(mock.sentinel.virtapi, DRIVER)
    assert isinstance(loaded, TrustedLibvirtDriver)
    init.assert_called_once_with(mock.sentinel.virtapi)


def test_enroll_command_refuses_plain_http(capsys) -> None:
    from trusted_launch.cmd import cli

    status = cli.main(["host", "enroll", "--ttp", "http://ttp.example", "--host", "h",
                       "--ak-cert-out", "/nonexistent/ak.pem"])
    assert status == 1
    assert "not an https:// URL" in capsys.readouterr().err


class AttestationNotificationTest(TrustedComputeTestBase):
    """With notifications on, the driver reports every attestation outcome."""

    def _start_trusted_compute(self, name: str) -> None:
        self.flags(notifications_enabled=True, group="trusted_launch")
        super()._start_trusted_compute(name)

    def test_accepted_and_refused_launches_are_notified(self) -> None:
        token, _nonce = self.env.make_token("high", IMAGE_BYTES)
        self._boot(token=token, host="host-a")
        token, _nonce = self.env.make_token("high", IMAGE_BYTES)
        self._boot(token=token, host="host-b", expected_state="ERROR")
        accepted = self.computes["host-a"].driver.notifier
        refused = self.computes["host-b"].driver.notifier
        self.assertTrue(accepted.flush(10) and refused.flush(10))
        self.assertEqual({"queued": 1, "rejected": 0},
                         {k: accepted.stats_dict()[k] for k in ("queued", "rejected")})
        self.assertEqual({"queued": 1, "rejected": 0},
                         {k: refused.stats_dict()[k] for k in ("queued", "rejected")})
