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
import json
import os
import pathlib
import secrets
import threading
import time

import fixtures
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from tests.nova.base import HOST_ATTR
from tests.nova.test_trusted_compute import (  # noqa: F401 - pytest fixtures
    IMAGE_BYTES,
    TrustedComputeTestBase,
    _bind_trusted_env,
    swtpm_state_cache,
    trusted_env,
)
from trusted_launch.client.challenge import verify_vm
from trusted_launch.guest import identity as guest_identity
from trusted_launch.guest.agent import ChallengeServer


class DemoScenarios(TrustedComputeTestBase):
    """Every Nova-side outcome of the demo, one after another on one deployment."""

    def setUp(self) -> None:
        super().setUp()
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

    def _refused(self, result: dict, token: str, *, host: str, ttp_url: str | None = None):
        server = self._boot(token=token, host=host, ttp_url=ttp_url, expected_state="ERROR")
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
