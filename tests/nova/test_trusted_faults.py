"""No instance stuck in BUILD: faults during a trusted launch, through the compute API.

Nova's libvirt functional harness as in :mod:`tests.nova.test_trusted_compute`
(real Nova 34, real TTP over HTTPS on SQLite, one real swtpm per host,
fakelibvirt), with ``host-a`` and ``host-c`` meeting ``high``. Each fault is
injected while the driver runs the protocol (right after TPM2_Certify, or
right after the TTP released {N, H}): the TTP stopped, its database made
unwritable, the host's swtpm killed. The instance ends as the driver's
docstring says: ERROR with a fault naming the check and its cause (never N)
when the TTP fails or released secrets cannot be opened; ACTIVE on the other
``high`` host when the TPM fails before the TTP was asked (rescheduled). The
surviving hosts' TPMs are back to their resident baseline, and once the part
returns the next launch succeeds.

:mod:`tests.security.test_faults` covers the same faults at the protocol
level (no half-state in the TTP's database, the token not spent, TPM handles);
this module covers what Nova makes of them.
"""

from __future__ import annotations

# Nova's functional package must be imported before anything imports eventlet.
import nova.tests.functional  # noqa: F401

# isort: split

import json
import subprocess
import threading
import time
from collections.abc import Callable

import fixtures
import pytest
from nova.virt.libvirt import driver as libvirt_driver

from tests.fixtures.swtpm import swtpm_state_cache  # noqa: F401
from tests.nova import test_trusted_compute as compute_tests
from tests.nova.base import HOST_ATTR
from tests.nova.trusted_env import NO_SECURE_BOOT_LOG, SECUREBOOT_LOG, running_environment
from trusted_launch.compute.launch import TrustedLaunchHost
from trusted_launch.compute.nonce_injection import NONCE_PATH
from trusted_launch.tpm import bindkeys
from trusted_launch.tpm.tcti import parse_tcti

pytestmark = [pytest.mark.swtpm]

HOST_LOGS = {"host-a": SECUREBOOT_LOG, "host-b": NO_SECURE_BOOT_LOG, "host-c": SECUREBOOT_LOG}
HOST_PROFILES = {"host-a": "high", "host-b": "low", "host-c": "high"}
HIGH_HOSTS = {"host-a", "host-c"}
IMAGE_BYTES = compute_tests.IMAGE_BYTES
#: Pool size 1: between launches the next bind key is resident, one policy session spare.
RESIDENT_BASELINE = (1, 1)
SETTLE_S = 10.0


@pytest.fixture(scope="module")
def trusted_env(tmp_path_factory, swtpm_state_cache):  # noqa: F811
    """The TTP and three enrolled swtpm hosts, shared by every test of this module."""
    with running_environment(tmp_path_factory, swtpm_state_cache, HOST_LOGS, "faults") as env:
        yield env


@pytest.fixture(scope="class")
def _bind_trusted_env(request, trusted_env) -> None:
    """The base class asks for this fixture by name; here it binds the three-host env."""
    request.cls.env = trusted_env


def _wait_until(condition: Callable[[], bool], timeout: float = SETTLE_S) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)


class TrustedLaunchFaultsTest(compute_tests.TrustedComputeTestBase):
    """A fault during the launch; the instance settles (never BUILD); the part returns."""

    def setUp(self) -> None:
        super().setUp()  # starts host-a and host-b
        self._start_trusted_compute("host-c")
        self.admin_api.add_host_to_aggregate(self.aggregates["high"], "host-c")
        for name in HIGH_HOSTS:
            self.assertEqual(RESIDENT_BASELINE, self._settled_handles(name))

    def _start_trusted_compute(self, name: str) -> None:
        self._trusted_flags(name)
        self.start_compute(hostname=name)

    def _trusted_flags(self, name: str) -> None:
        host = self.env.hosts[name]
        self.flags(tcti=host.tpm.tcti, event_log_path=str(host.event_log_file),
                   ak_certificate_file=str(host.ak_cert_file),
                   host_security_profile=HOST_PROFILES[name], bind_key_pool_size=1,
                   allowed_ttp_urls=[self.env.ttp_url], ttp_ca_file=str(self.env.ca.cert_file),
                   ttp_connect_retries=0, ttp_timeout=10, group="trusted_launch")

    # Helpers -------------------------------------------------------------------------
    def _handles(self, name: str) -> tuple[int, int]:
        """(transient objects, loaded sessions) in ``name``'s TPM (TPM2_GetCapability)."""
        device = self.computes[name].driver.trusted_device
        return len(device.transient_handles()), len(device.loaded_sessions())

    def _settled_handles(self, name: str) -> tuple[int, int]:
        """Handle counts once the pool refiller has topped ``name``'s pool up again."""
        _wait_until(lambda: self._handles(name) == RESIDENT_BASELINE)
        return self._handles(name)

    def _host_of(self, device) -> str:
        return next(name for name, host in self.env.hosts.items()
                    if parse_tcti(host.tpm.tcti) == device.tcti)

    def _once_during_launch(self, target, attribute: str, fault: Callable[[object], None],
                            *, before: bool) -> list[str]:
        """Wrap ``target.attribute(self_or_device, ...)``: run ``fault`` once, before or after.

        Returns the list the affected host's name is appended to.
        """
        original = getattr(target, attribute)
        hit: list[str] = []

        def wrapped(first, *args, **kwargs):
            device = getattr(first, "_device", first)
            if hit:
                return original(first, *args, **kwargs)
            hit.append(self._host_of(device))
            if before:
                fault(device)
                return original(first, *args, **kwargs)
            result = original(first, *args, **kwargs)
            fault(device)
            return result

        self.useFixture(fixtures.MockPatchObject(target, attribute, wrapped))
        return hit

    def _replace(self, owner: type, name: str, function: Callable) -> None:
        """``owner.name = function`` for this test: a plain method (no autospec'd mock, which
        would bind Nova's keyword arguments against the wrapper's signature)."""
        original = owner.__dict__[name]
        setattr(owner, name, function)
        self.addCleanup(setattr, owner, name, original)

    def _ttp_running(self) -> None:
        if self.env.ttp.process.poll() is not None:
            self.env.ttp.start()

    def _kill_tpm(self, device) -> None:
        self.env.hosts[self._host_of(device)].tpm.kill()

    def _tpm_returns(self, name: str) -> None:
        """Power the killed TPM on again, boot its log, restart its nova-compute."""
        tpm = self.env.hosts[name].tpm
        tpm.restart()
        tpm.boot(HOST_LOGS[name])
        self._trusted_flags(name)
        self.restart_compute_service(name)
        self.assertEqual(RESIDENT_BASELINE, self._settled_handles(name))

    def _assert_settled_in_error(self, server: dict, nonce: bytes, *needles: str) -> str:
        self.assertEqual("ERROR", server["status"])
        self.assertIsNone(server["OS-EXT-STS:task_state"])  # not building any more
        message = server["fault"]["message"]
        for needle in needles:
            self.assertIn(needle, message)
        compute_tests.assert_absent(self, nonce, json.dumps(server).encode(), "the server")
        self.assertFalse((self._instance_dir(server["id"]) / "disk.config").exists())
        return message

    def _assert_surviving_tpms_at_baseline(self, *excluded: str) -> None:
        for name in sorted(HIGH_HOSTS - set(excluded)):
            self.assertEqual(RESIDENT_BASELINE, self._settled_handles(name), name)

    def _boot_succeeds(self, token: str, nonce: bytes, host: str | None = None) -> dict:
        server = self._boot(token=token, host=host)
        self.assertEqual(nonce.hex().encode() + b"\n",
                         self._config_drive_file(server["id"], NONCE_PATH))
        return server

    # Tests ---------------------------------------------------------------------------
    def test_ttp_stopped_during_the_launch_goes_to_error_then_recovers(self) -> None:
        token, nonce = self.env.make_token("high", IMAGE_BYTES)
        url = self.env.ttp_url
        self.addCleanup(self._ttp_running)
        hit = self._once_during_launch(bindkeys, "certify", lambda _: self.env.ttp.stop(),
                                       before=False)
        server = self._boot(token=token, host="host-a", expected_state="ERROR")
        self.assertEqual(["host-a"], hit)
        self._assert_settled_in_error(server, nonce, "ttp_unreachable", url)
        self._assert_surviving_tpms_at_baseline()
        self.env.ttp.start()  # on a new port: the operator's allow-list follows it
        self.flags(allowed_ttp_urls=[self.env.ttp_url], group="trusted_launch")
        self._boot_succeeds(token, nonce, host="host-a")  # the token was not spent

    def test_ttp_database_unwritable_during_the_launch_goes_to_error_then_recovers(
            self) -> None:
        database = self.env.ttp.directory / "ttp.sqlite"
        token, nonce = self.env.make_token("high", IMAGE_BYTES)

        def freeze(_device) -> None:
            if subprocess.run(["chattr", "+i", str(database)], check=False).returncode:
                self.skipTest("chattr +i is not supported on this file system")
            self.addCleanup(subprocess.run, ["chattr", "-i", str(database)], check=True)

        hit = self._once_during_launch(bindkeys, "certify", freeze, before=False)
        server = self._boot(token=token, host="host-a", expected_state="ERROR")
        self.assertEqual(["host-a"], hit)
        self._assert_settled_in_error(server, nonce, "ttp_unreachable", "HTTP 503",
                                      "audit record could not be stored")
        self._assert_surviving_tpms_at_baseline()
        subprocess.run(["chattr", "-i", str(database)], check=True)
        self._boot_succeeds(token, nonce, host="host-a")  # nothing was recorded or spent

    def test_attestation_runs_while_nova_makes_the_disks(self) -> None:
        """Steps 5-11 overlap LibvirtDriver._create_image (the image fetch, the disks)."""
        attesting = threading.Event()
        during_disks: list[bool] = []
        attest, create_image = TrustedLaunchHost.attest, libvirt_driver.LibvirtDriver._create_image

        def attest_and_signal(host, *args, **kwargs):
            attesting.set()
            return attest(host, *args, **kwargs)

        def create_image_seeing_the_attestation(driver, *args, **kwargs):
            during_disks.append(attesting.wait(timeout=120))  # a serial driver never sets it
            return create_image(*args, **kwargs)  # the harness's fake (a mock: no self)

        self._replace(TrustedLaunchHost, "attest", attest_and_signal)
        self._replace(libvirt_driver.LibvirtDriver, "_create_image",
                      create_image_seeing_the_attestation)
        token, nonce = self.env.make_token("high", IMAGE_BYTES)
        self._boot_succeeds(token, nonce, host="host-a")
        self.assertEqual([True], during_disks)
        self._assert_surviving_tpms_at_baseline()

    def test_disks_failing_during_the_attestation_free_its_bind_key(self) -> None:
        """The attestation finished but the disks failed: the key is flushed, the launch
        rescheduled to the other high host, which boots it."""
        create_image, failed = libvirt_driver.LibvirtDriver._create_image, []

        def create_image_failing_once(driver, *args, **kwargs):
            if not failed:
                failed.append(driver)
                raise OSError(28, "No space left on device")
            return create_image(*args, **kwargs)  # the harness's fake (a mock: no self)

        self._replace(libvirt_driver.LibvirtDriver, "_create_image", create_image_failing_once)
        token, nonce = self.env.make_token("high", IMAGE_BYTES)
        server = self._boot_succeeds(token, nonce)
        self.assertEqual(1, len(failed))
        self.assertIn(server[HOST_ATTR], HIGH_HOSTS)
        self._assert_surviving_tpms_at_baseline()  # the failed host's key was flushed too

    def test_swtpm_killed_before_certify_reschedules_to_the_other_trusted_host(
            self) -> None:
        self._tpm_death_reschedules(bindkeys, "certify")

    def test_swtpm_killed_after_the_release_reschedules_to_the_other_trusted_host(
            self) -> None:
        """N was sealed to the dead TPM; the other host re-attests the same launch."""
        self._tpm_death_reschedules(TrustedLaunchHost, "open")

    def _tpm_death_reschedules(self, target, name: str) -> None:
        """Kill the TPM of the host that first calls ``target.name``: the other one boots it."""
        token, nonce = self.env.make_token("high", IMAGE_BYTES)
        hit = self._once_during_launch(target, name, self._kill_tpm, before=True)
        server = self._boot_succeeds(token, nonce)
        self.assertEqual(1, len(hit))
        killed = hit[0]
        self.assertEqual((HIGH_HOSTS - {killed}).pop(), server[HOST_ATTR])
        self._assert_surviving_tpms_at_baseline(killed)
        self._tpm_returns(killed)
        token, nonce = self.env.make_token("high", IMAGE_BYTES)
        self._boot_succeeds(token, nonce, host=killed)
        self.assertEqual(RESIDENT_BASELINE, self._settled_handles(killed))
