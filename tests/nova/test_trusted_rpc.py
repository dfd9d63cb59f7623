"""TrustedLibvirtDriver with ``ttp_transport = rpc``, in Nova's libvirt functional harness.

The same harness as test_trusted_compute.py (Nova 34, two nova-compute
services with our driver, swtpm hosts, the real TTP), but the driver reaches
the TTP over oslo.messaging RPC on the real RabbitMQ (``ttp_rpc_transport_url``;
Nova's own RPC stays on the harness' fake bus), served by a real
``trusted-launch-ttp-rpc`` on a topic of this run, and authenticates each
release by the TTP's receipt (``ttp_receipt_key_file``). Everything above the
client is unchanged.
"""

from __future__ import annotations

# Nova's functional package must be imported before anything imports eventlet.
import nova.tests.functional  # noqa: F401

# isort: split

import secrets

import kombu
import pytest

from tests.fixtures.swtpm import swtpm_state_cache  # noqa: F401
from tests.nova.test_trusted_compute import (
    HOST_LOGS,
    IMAGE_BYTES,
    TrustedComputeTestBase,
    assert_absent,
)
from tests.nova.trusted_env import running_environment
from trusted_launch.compute.nonce_injection import NONCE_PATH, RECEIPT_PATH
from trusted_launch.crypto.receipt import read_unverified
from trusted_launch.sandbox.services import rabbitmq_reachable
from trusted_launch.sandbox.ttp_rpc_process import rpc_transport, start_ttp_rpc

RABBIT_URL = "rabbit://guest:guest@127.0.0.1:5672/"



pytestmark = [pytest.mark.swtpm, pytest.mark.rabbitmq,
              pytest.mark.skipif(not rabbitmq_reachable(),
                                 reason="RabbitMQ is not listening on 127.0.0.1:5672")]


@pytest.fixture(scope="module")
def trusted_env(tmp_path_factory, swtpm_state_cache):  # noqa: F811
    """The TTP (HTTPS and RPC) and two enrolled swtpm hosts."""
    with running_environment(tmp_path_factory, swtpm_state_cache, HOST_LOGS, "nova-rpc") as env:
        transport = rpc_transport(RABBIT_URL)
        topic = f"tl-test-nova-{secrets.token_hex(6)}"
        key_file = env.directory / "ttp-receipt-key.pem"
        key_file.write_text(env.ttp.request("GET", "/v1/keys").json()["receipt_keys"][0]
                            ["public_key"])
        try:
            with start_ttp_rpc(env.ttp, transport, transport_url=RABBIT_URL,
                               topic=topic) as server:
                env.rpc = server
                env.receipt_key_file = key_file
                yield env
        finally:
            transport.cleanup()
            with kombu.Connection("amqp://guest:guest@127.0.0.1:5672//") as connection:
                for name in (topic, f"{topic}.sandbox"):
                    connection.channel().queue_delete(name)


@pytest.fixture(scope="class")
def _bind_trusted_env(request, trusted_env) -> None:
    request.cls.env = trusted_env


class TrustedLaunchOverRPCTest(TrustedComputeTestBase):
    """Launches through the compute API with the TTP reached over RPC."""

    def _start_trusted_compute(self, name: str) -> None:
        self.flags(ttp_transport="rpc", ttp_rpc_topic=self.env.rpc.topic,
                   ttp_rpc_transport_url=RABBIT_URL,
                   ttp_receipt_key_file=str(self.env.receipt_key_file), group="trusted_launch")
        super()._start_trusted_compute(name)

    def test_trusted_launch_over_rpc_goes_active(self) -> None:
        for host in HOST_LOGS:
            driver = self.computes[host].driver
            self.assertIsNotNone(driver.trusted_host, driver.not_ready_reason)
        token, nonce = self.env.make_token("high", IMAGE_BYTES)
        server = self._boot(token=token)
        self.assertEqual(nonce.hex().encode() + b"\n",
                         self._config_drive_file(server["id"], NONCE_PATH))
        _key_id, receipt = read_unverified(self._config_drive_file(server["id"], RECEIPT_PATH))
        self.assertEqual(("trusted", server["id"]), (receipt.verdict, receipt.launch_id))
        record = self.env.ttp.admin("GET", f"/v1/attestations/{receipt.attestation_id}")
        self.assertEqual(f"rpc:{self.env.rpc.topic}", record.json()["requester"])
        assert_absent(self, nonce, self._database_dump(), "Nova's databases")

    def test_host_failing_the_profile_over_rpc_goes_to_error(self) -> None:
        token, _nonce = self.env.make_token("high", IMAGE_BYTES)
        server = self._boot(token=token, host="host-b", expected_state="ERROR")
        self.assertIn("profile_policy", server["fault"]["message"])
        self.assertIn("Secure Boot", server["fault"]["message"])
