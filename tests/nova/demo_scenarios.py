"""The demo's Nova scenarios, run through Nova's own functional harness.

Not collected by the test suite (the file name does not start with
``test_``): ``trusted-launch demo`` runs it with pytest in a subprocess and
reads the scenario results it writes as JSON to ``$TRUSTED_LAUNCH_DEMO_OUT``.
Real Nova API, conductor, scheduler (with SecurityProfileFilter) and two
computes running TrustedLibvirtDriver, each with its own swtpm (host-a boots a
Secure Boot log, profile high; host-b no Secure Boot, profile low), the TTP
over HTTPS; libvirt is Nova's fakelibvirt.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pathlib
import secrets
import threading
import time

import fixtures
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from tests.nova.base import HOST_ATTR
from tests.nova.test_encrypted_images import (  # noqa: F401 - pytest fixtures
    _bind_encrypted_image,
    encrypted_image,
)
from tests.nova.test_trusted_compute import (  # noqa: F401 - pytest fixtures
    IMAGE_BYTES,
    TrustedComputeTestBase,
    _bind_trusted_env,
    swtpm_state_cache,
    trusted_env,
)
from trusted_launch.client.challenge import verify_vm
from trusted_launch.client.launch_token import create_launch_token
from trusted_launch.compute.encrypted_image import secret_uuid_for
from trusted_launch.crypto.digest import ImageDigest
from trusted_launch.guest import identity as guest_identity
from trusted_launch.guest.agent import ChallengeServer


@pytest.mark.usefixtures("_bind_encrypted_image")
class DemoScenarios(TrustedComputeTestBase):
    """Every Nova-side outcome of the demo, one after another on one deployment."""

    encrypted: bytes  # a LUKS qcow2 made by ``trusted-launch image encrypt``
    key: bytes

    def setUp(self) -> None:
        super().setUp()
        self.flags(force_raw_images=False)  # encrypted images stay qcow2 ciphertext
        self.encrypted_id = self._create_image_of(self.encrypted, "qcow2")
        self.results: list[dict] = []

    @contextlib.contextmanager
    def scenario(self, name: str, expected: str):
        result = {"name": name, "expected": expected, "outcome": "", "reason": ""}
        started = time.perf_counter()
        try:
            yield result
        except Exception as exc:
            result["outcome"], result["reason"] = "refused", str(exc)[:300]
        result["outcome"] = result["outcome"] or "accepted"
        result["duration_ms"] = round((time.perf_counter() - started) * 1000, 1)
        self.results.append(result)

    def test_demo(self) -> None:
        token, nonce = self.env.make_token("high", IMAGE_BYTES)
        with self.scenario("trusted_launch_accepted", "accepted") as result:
            server = self._boot(token=token)
            result["reason"] = (f"ACTIVE on {server[HOST_ATTR]} (profile high); N on its "
                                "config drive only")
        with self.scenario("vm_challenge_verified", "accepted") as result:
            with self._guest_agent(server) as address:
                vm = verify_vm(address, server["id"], nonce)
            result["reason"] = f"guest proved N; SSH host key {vm.ssh_host_key_fingerprint}"
        with self.scenario("wrong_nonce_challenge_rejected", "refused"):
            with self._guest_agent(server) as address:
                verify_vm(address, server["id"], secrets.token_bytes(32))
        with self.scenario("lower_profile_host_never_chosen", "refused") as result:
            self._lower_profile_host_never_chosen(result)
        with self.scenario("untrusted_host_refused", "refused") as result:
            self._refused(result, self.env.make_token("high", IMAGE_BYTES)[0], host="host-b")
        with self.scenario("tampered_image_refused", "refused") as result:
            tampered_token = self.env.make_token("high", IMAGE_BYTES + b"tampered")[0]
            self._refused(result, tampered_token, host="host-a")
        with self.scenario("ttp_unreachable_refused", "refused") as result:
            self._refused(result, self.env.make_token("high", IMAGE_BYTES)[0], host="host-a",
                          ttp_url=self.env.closed_port_url)
        with self.scenario("encrypted_image_boots_on_attested_host", "accepted") as result:
            self._encrypted_image_boots(result)
        with self.scenario("encrypted_image_key_withheld_from_untrusted_host",
                           "refused") as result:
            self._refused(result, self._encrypted_token(), host="host-b",
                          image_id=self.encrypted_id)
        with self.scenario("plain_launch_unchanged", "accepted") as result:
            plain = self._boot(host="host-b")
            result["reason"] = (f"no trusted properties: ACTIVE on {plain[HOST_ATTR]}, "
                                f"config drive {plain['config_drive'] or 'off'}, no TTP call")
        with open(os.environ["TRUSTED_LAUNCH_DEMO_OUT"], "w") as out:
            json.dump({"scenarios": self.results}, out)

    def _lower_profile_host_never_chosen(self, result: dict) -> None:
        hosts = set()
        for _ in range(3):
            hosts.add(self._boot(token=self.env.make_token("high", IMAGE_BYTES)[0])[HOST_ATTR])
        if "host-b" in hosts:
            result["outcome"] = "accepted"
            result["reason"] = "the scheduler chose host-b (profile low) for profile high"
        else:
            result["outcome"] = "refused"
            result["reason"] = (f"3 launches asking for high all went to {sorted(hosts)}; "
                                "the filter never offered host-b (low)")

    def _encrypted_token(self) -> str:
        digest = ImageDigest("sha512", hashlib.sha512(self.encrypted).digest())
        return create_launch_token(
            self.env.ttp_url, "high", digest, ca_file=str(self.env.ca.cert_file),
            nonce_dir=self.env.directory / "nonces", image_key=self.key)[0]

    def _encrypted_image_boots(self, result: dict) -> None:
        server = self._boot(token=self._encrypted_token(), image_id=self.encrypted_id)
        connection = self.computes[server[HOST_ATTR]].driver._host.get_connection()
        secret_uuid = secret_uuid_for(server["id"])
        secret = connection._removed_secrets.get(secret_uuid)
        if secret is None or secret_uuid in connection._secrets or not (
                secret._ephemeral and secret._private):
            raise AssertionError("the disk secret was not an ephemeral private secret "
                                 "undefined after the guest started")
        result["reason"] = (f"ACTIVE on {server[HOST_ATTR]}: the LUKS root disk opened with "
                            "the key the TTP released with N, given to libvirt as an "
                            "ephemeral private secret, undefined once the guest started")

    def _refused(self, result: dict, token: str, *, host: str, ttp_url: str | None = None,
                 image_id: str | None = None):
        server = self._boot(token=token, host=host, ttp_url=ttp_url, image_id=image_id,
                            expected_state="ERROR")
        result["outcome"] = "refused"
        result["reason"] = server["fault"]["message"][:300]

    @contextlib.contextmanager
    def _guest_agent(self, server: dict):
        """The guest agent, fed the config drive the host built for ``server``."""
        mount = self.useFixture(fixtures.TempDir()).path
        self._mount_config_drive(server["id"], pathlib.Path(mount))
        key_file = os.path.join(mount, "ssh_host_ed25519_key.pub")
        with open(key_file, "wb") as out:
            out.write(ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
                serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH))
        identity = guest_identity.load_identity(
            nonce_file=os.path.join(mount, "trusted_launch", "nonce"),
            server_id=server["id"], ssh_host_key=key_file)
        agent = ChallengeServer(("127.0.0.1", 0), identity)
        thread = threading.Thread(target=agent.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"127.0.0.1:{agent.server_address[1]}"
        finally:
            agent.shutdown()
            agent.server_close()
