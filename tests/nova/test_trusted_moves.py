"""Every path that starts a trusted guest again re-attests the host that starts it.

Nova's libvirt functional harness as in :mod:`tests.nova.test_trusted_compute`
(real Nova 34, real TTP over HTTPS, one real swtpm per host, fakelibvirt),
with three hosts: ``host-a`` and ``host-c`` meet ``high`` (Secure Boot log),
``host-b`` only ``low``. The TTP's audit trail (its own database) shows which
host attested which launch id, and when it was a re-attestation.
"""

from __future__ import annotations

# Nova's functional package must be imported before anything imports eventlet.
import nova.tests.functional  # noqa: F401

# isort: split

import sqlite3

import fixtures
import pytest
from nova import context as nova_context
from nova import objects
from nova.tests.functional.api import client
from nova.tests.functional.libvirt import base as libvirt_base

from tests.fixtures.swtpm import swtpm_state_cache  # noqa: F401
from tests.nova import test_trusted_compute as compute_tests
from tests.nova.base import HOST_ATTR
from tests.nova.trusted_env import (
    NO_SECURE_BOOT_LOG,
    SECUREBOOT_LOG,
    running_environment,
)
from trusted_launch.compute.nonce_injection import NONCE_PATH
from trusted_launch.compute.relaunch import COMMITMENT_KEY, nonce_commitment
from trusted_launch.sandbox.swtpm import extend_pcr

pytestmark = [pytest.mark.swtpm]

HOST_LOGS = {"host-a": SECUREBOOT_LOG, "host-b": NO_SECURE_BOOT_LOG, "host-c": SECUREBOOT_LOG}
HOST_PROFILES = {"host-a": "high", "host-b": "low", "host-c": "high"}
IMAGE_BYTES = compute_tests.IMAGE_BYTES
HIGH_HOSTS = {"host-a", "host-c"}


@pytest.fixture(scope="module")
def trusted_env(tmp_path_factory, swtpm_state_cache):  # noqa: F811
    """The TTP and three enrolled swtpm hosts, shared by every test of this module."""
    with running_environment(tmp_path_factory, swtpm_state_cache, HOST_LOGS, "moves") as env:
        yield env


@pytest.fixture(scope="class")
def _bind_trusted_env(request, trusted_env) -> None:
    """The base class asks for this fixture by name; here it binds the three-host env."""
    request.cls.env = trusted_env


class TrustedMovesTest(libvirt_base.LibvirtMigrationMixin,
                       compute_tests.TrustedComputeTestBase):
    """Moves, rebuild and restarts of a server launched on a ``high`` host."""

    def setUp(self) -> None:
        self._changed_tpms: list[str] = []
        self.addCleanup(self._reset_changed_tpms)  # runs after the computes stopped
        self.server: dict = {}
        super().setUp()  # starts host-a and host-b (the base module's hosts)
        self._start_trusted_compute("host-c")
        self.admin_api.add_host_to_aggregate(self.aggregates["high"], "host-c")
        self.useFixture(fixtures.MockPatch(
            "nova.virt.libvirt.driver.LibvirtDriver.migrate_disk_and_power_off",
            return_value="{}"))

    def _start_trusted_compute(self, name: str) -> None:
        host = self.env.hosts[name]
        self.flags(tcti=host.tpm.tcti, event_log_path=str(host.event_log_file),
                   ak_certificate_file=str(host.ak_cert_file),
                   host_security_profile=HOST_PROFILES[name], bind_key_pool_size=1,
                   allowed_ttp_urls=[self.env.ttp_url], ttp_ca_file=str(self.env.ca.cert_file),
                   ttp_connect_retries=0, ttp_timeout=10, group="trusted_launch")
        self.start_compute(hostname=name)

    def _reset_changed_tpms(self) -> None:
        """Power-cycle and re-boot each TPM a test measured into (PCRs back to the log)."""
        for name in self._changed_tpms:
            host = self.env.hosts[name]
            host.tpm.restart()
            host.tpm.boot(HOST_LOGS[name])

    # Helpers -------------------------------------------------------------------------
    def _trusted_server(self) -> tuple[dict, bytes]:
        token, nonce = self.env.make_token("high", IMAGE_BYTES)
        server = self._boot(token=token)
        self.assertIn(server[HOST_ATTR], HIGH_HOSTS)
        self.server = server
        return server, nonce

    def _decisions(self, launch_id: str) -> list[tuple[str, str, str | None, str | None]]:
        """(host, verdict, check, reason) of each TTP decision about ``launch_id``, in order."""
        with sqlite3.connect(self.env.directory / "ttp" / "ttp.sqlite") as connection:
            return list(connection.execute(
                "SELECT host, verdict, \"check\", reason FROM attestations "
                "WHERE launch_id = ? ORDER BY created_at", (launch_id,)))

    def _assert_re_attested(self, server_id: str, host: str | set[str], count: int = 2
                            ) -> None:
        """``count`` decisions about the launch; the latest a re-attestation by ``host``."""
        decisions = self._decisions(server_id)
        self.assertEqual(count, len(decisions), decisions)
        self.assertEqual("trusted", decisions[0][1])
        latest_host, verdict, _check, reason = decisions[-1]
        self.assertIn(latest_host, {host} if isinstance(host, str) else host, decisions)
        self.assertEqual("trusted", verdict, decisions)
        self.assertTrue(reason.startswith(f"re-attestation of launch {server_id}"), reason)

    def _other_high_host(self, host: str) -> str:
        return (HIGH_HOSTS - {host}).pop()

    def _system_metadata(self, server_id: str) -> dict:
        ctxt = nova_context.get_admin_context()
        mapping = objects.InstanceMapping.get_by_instance_uuid(ctxt, server_id)
        with nova_context.target_cell(ctxt, mapping.cell_mapping) as cctxt:
            return objects.Instance.get_by_uuid(
                cctxt, server_id, expected_attrs=["system_metadata"]).system_metadata

    def _force_down(self, host: str) -> None:
        self.computes[host].stop()
        service_id = self.admin_api.get_services(host=host, binary="nova-compute")[0]["id"]
        self.admin_api.put_service(service_id, {"forced_down": "true"})

    # Tests ---------------------------------------------------------------------------
    def test_cold_migration_re_attests_the_destination(self) -> None:
        server, nonce = self._trusted_server()
        recorded = self._system_metadata(server["id"])[COMMITMENT_KEY]
        self.assertEqual(nonce_commitment(nonce, server["id"]), recorded)  # not N itself
        target = self._other_high_host(server[HOST_ATTR])
        server = self._migrate_server(server)
        self.assertEqual(target, server[HOST_ATTR])
        server = self._confirm_resize(server)
        self._assert_re_attested(server["id"], target)
        self.assertEqual(nonce.hex().encode() + b"\n",
                         self._config_drive_file(server["id"], NONCE_PATH))
        self.assertEqual(recorded, self._system_metadata(server["id"])[COMMITMENT_KEY])

    def test_evacuate_re_attests_the_destination(self) -> None:
        server, _nonce = self._trusted_server()
        source = server[HOST_ATTR]
        target = self._other_high_host(source)
        self._force_down(source)
        server = self._evacuate_server(server, expected_host=target)  # 2.95+: stopped
        self._assert_re_attested(server["id"], target)

    def test_rebuild_and_power_on_re_attest_but_another_server_cannot_use_the_token(
            self) -> None:
        """Also: unshelve re-attests, then the host refuses the shelved snapshot's bytes."""
        token, nonce = self.env.make_token("high", IMAGE_BYTES)
        server = self._boot(token=token)
        server = self._rebuild_server(server, self.image_id)
        self._assert_re_attested(server["id"], server[HOST_ATTR])
        self.assertEqual(nonce.hex().encode() + b"\n",
                         self._config_drive_file(server["id"], NONCE_PATH))
        server = self._start_server(self._stop_server(server))
        self._assert_re_attested(server["id"], server[HOST_ATTR], count=3)
        other = self._boot(token=token, expected_state="ERROR")
        self.assertIn("token_replayed", other["fault"]["message"])
        self.assertIn("another launch", other["fault"]["message"])
        self._shelve_server(server)
        try:  # this harness runs the compute's cast inside the API request
            self.api.post_server_action(server["id"], {"unshelve": None})
        except client.OpenStackApiException as exc:
            self.assertIn("ImageUnacceptable", str(exc))
        self._wait_for_server_parameter(server, {"status": "SHELVED_OFFLOADED",
                                                 "OS-EXT-STS:task_state": None})
        self._assert_re_attested(server["id"], HIGH_HOSTS, count=4)
    def test_unshelve_refusal_tells_the_tenant_to_launch_the_snapshot_anew(self) -> None:
        server, _nonce = self._trusted_server()
        self._shelve_server(server)
        with self.assertRaises(client.OpenStackApiException):  # the cast runs in the request
            self.api.post_server_action(server["id"], {"unshelve": None})
        self._wait_for_server_parameter(server, {"status": "SHELVED_OFFLOADED",
                                                 "OS-EXT-STS:task_state": None})
        logged = self.stdlog.logger.output
        self.assertIn("image_digest_mismatch", logged)
        self.assertIn("launch a new trusted server from the snapshot", logged)

    def test_live_migration_to_a_trusted_destination_re_attests_it(self) -> None:
        server, _nonce = self._trusted_server()
        self.src = self.computes[server[HOST_ATTR]]
        target = self._other_high_host(server[HOST_ATTR])
        self.dest = self.computes[target]
        server = self._live_migrate(server)
        self.assertEqual(target, server[HOST_ATTR])
        self._assert_re_attested(server["id"], target)

    def test_live_migration_forced_to_a_failing_host_is_refused_by_its_driver(self) -> None:
        server, _nonce = self._trusted_server()
        source = server[HOST_ATTR]
        self.src, self.dest = self.computes[source], self.computes["host-b"]
        self.api.microversion = "2.67"  # the last version whose "force" skips the scheduler
        self.addCleanup(setattr, self.api, "microversion", "latest")
        self.api.post_server_action(server["id"], {"os-migrateLive": {
            "host": "host-b", "block_migration": "auto", "force": True}})
        self._wait_for_migration_status(server, ["failed", "error"])
        server = self._wait_for_state_change(server, "ACTIVE")
        self.assertEqual(source, server[HOST_ATTR])
        self.assertFalse(self.migrate_stub_ran)
        host, verdict, check, _reason = self._decisions(server["id"])[-1]
        self.assertEqual(("host-b", "refused", "profile_policy"), (host, verdict, check))

    def test_hard_reboot_after_the_hosts_pcrs_changed_is_refused(self) -> None:
        server, _nonce = self._trusted_server()
        host = server[HOST_ATTR]
        self._changed_tpms.append(host)
        extend_pcr(self.computes[host].driver.trusted_device, 7, b"unexpected boot component")
        try:  # this harness runs the compute's cast inside the API request
            self.api.post_server_action(server["id"], {"reboot": {"type": "HARD"}})
        except client.OpenStackApiException as exc:
            self.assertIn("TrustedRelaunchRefused", str(exc))
        server = self._wait_for_state_change(server, "ERROR")
        self.assertIn("Trusted launch refused", server["fault"]["message"])
        self.assertIn("hard reboot", server["fault"]["message"])
        # A pool key made before the extend opens nothing now; one made after it is
        # locked to PCRs the log does not replay to: either way the host gets no N.
        self.assertRegex(server["fault"]["message"], "release_unusable|bind_key_policy")
        domains = self.computes[host].driver._host.get_connection().listAllDomains(
            compute_tests.fakelibvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
        self.assertNotIn(server["id"], [domain.UUIDString() for domain in domains])

    def test_hard_reboot_of_a_trusted_server_that_lost_its_properties_is_refused(
            self) -> None:
        """A trusted guest never restarts as a plain one (its config drive holds N)."""
        server, _nonce = self._trusted_server()
        for key in ("trusted_token", "trusted_ttp"):
            self.api.delete_server_metadata(server["id"], key)
        try:  # this harness runs the compute's cast inside the API request
            self.api.post_server_action(server["id"], {"reboot": {"type": "HARD"}})
        except client.OpenStackApiException as exc:
            self.assertIn("TrustedRelaunchRefused", str(exc))
        server = self._wait_for_state_change(server, "ERROR")
        self.assertIn("hard reboot", server["fault"]["message"])
        self.assertIn("trusted_token and trusted_ttp are gone", server["fault"]["message"])
        self.assertEqual(1, len(self._decisions(server["id"])))  # the TTP was not asked
