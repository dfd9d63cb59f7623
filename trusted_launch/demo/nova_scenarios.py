"""Demo stage 3's scenarios, run through Nova's own functional harness, without pytest.

``python -m trusted_launch.demo.nova_scenarios --data-dir DIR --out FILE``
(run by :mod:`.nova_stage` in a child process, since Nova's harness owns the
process's configuration and threads): real Nova API, conductor, scheduler
(with SecurityProfileFilter) and two computes running TrustedLibvirtDriver,
each with its own swtpm (host-a boots a Secure Boot log, profile high; host-b
no Secure Boot, profile low), the TTP over HTTPS; libvirt is Nova's
fakelibvirt (:mod:`trusted_launch.sandbox.nova_harness`). Writes
``{"scenarios": [{name, expected, outcome, reason, duration_ms, steps_ms}]}``
to FILE; exits 1, with the harness's error on stderr, if the harness itself
failed (then FILE is not written).
"""

# ruff: noqa: E402 - Nova's concurrency mode must be chosen before the other imports.
from __future__ import annotations

import os

# Native threads, decided before anything imports eventlet.
os.environ.setdefault("OS_NOVA_DISABLE_EVENTLET_PATCHING", "1")
from nova import monkey_patch

monkey_patch.patch()

# isort: split

import argparse
import contextlib
import hashlib
import json
import pathlib
import secrets
import sys
import tempfile
import threading
import unittest
from collections.abc import Iterator

import fixtures
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from trusted_launch.client.challenge import verify_vm
from trusted_launch.client.image_encryption import encrypt_image, write_new_key_file
from trusted_launch.client.launch_token import create_launch_token
from trusted_launch.compute.encrypted_image import secret_uuid_for
from trusted_launch.crypto.digest import ImageDigest
from trusted_launch.demo.report import ACCEPTED, REFUSED, Recorder, ScenarioResult
from trusted_launch.guest import identity as guest_identity
from trusted_launch.guest.agent import ChallengeServer
from trusted_launch.sandbox.nova_env import (
    NO_SECURE_BOOT_LOG_NAME,
    SECUREBOOT_LOG_NAME,
    running_environment,
)
from trusted_launch.sandbox.nova_harness import HOST_ATTR, IMAGE_BYTES, TrustedNovaTestCase
from trusted_launch.sandbox.swtpm import StateCache

#: The plaintext the tenant encrypts (1 MiB: LUKS needs room for its header).
ENCRYPTED_PLAINTEXT = b"plaintext of the demo's encrypted image ".ljust(1 << 20, b"\0")
REASON_CHARS = 300


class NovaScenarios(TrustedNovaTestCase):
    """Every Nova-side outcome of the demo, one after another on one deployment.

    :func:`main` sets the class attributes before it runs the case.
    """

    encrypted: bytes  # a LUKS qcow2 made by the tenant tooling
    key: bytes
    recorder: Recorder

    def setUp(self) -> None:
        super().setUp()
        self.flags(force_raw_images=False)  # encrypted images stay qcow2 ciphertext
        self.encrypted_id = self._create_image_of(self.encrypted, "qcow2")

    def run_scenarios(self) -> None:
        scenario = self.recorder.scenario
        token, nonce = self.env.make_token("high", IMAGE_BYTES)
        with scenario("trusted_launch_accepted", ACCEPTED) as result:
            server = self._boot(token=token)
            result.reason = (f"ACTIVE on {server[HOST_ATTR]} (profile high); N on its "
                             "config drive only")
        with scenario("vm_challenge_verified", ACCEPTED) as result:
            with self._guest_agent(server) as address:
                vm = verify_vm(address, server["id"], nonce)
            result.reason = f"guest proved N; SSH host key {vm.ssh_host_key_fingerprint}"
        with scenario("wrong_nonce_challenge_rejected", REFUSED):
            with self._guest_agent(server) as address:
                verify_vm(address, server["id"], secrets.token_bytes(32))
        with scenario("lower_profile_host_never_chosen", REFUSED) as result:
            self._lower_profile_host_never_chosen(result)
        with scenario("untrusted_host_refused", REFUSED) as result:
            self._refused(result, self.env.make_token("high", IMAGE_BYTES)[0], host="host-b")
        with scenario("tampered_image_refused", REFUSED) as result:
            tampered_token = self.env.make_token("high", IMAGE_BYTES + b"tampered")[0]
            self._refused(result, tampered_token, host="host-a")
        with scenario("ttp_unreachable_refused", REFUSED) as result:
            self._refused(result, self.env.make_token("high", IMAGE_BYTES)[0], host="host-a",
                          ttp_url=self.env.closed_port_url)
        with scenario("encrypted_image_boots_on_attested_host", ACCEPTED) as result:
            self._encrypted_image_boots(result)
        with scenario("encrypted_image_key_withheld_from_untrusted_host", REFUSED) as result:
            self._refused(result, self._encrypted_token(), host="host-b",
                          image_id=self.encrypted_id)
        with scenario("plain_launch_unchanged", ACCEPTED) as result:
            plain = self._boot(host="host-b")
            result.reason = (f"no trusted properties: ACTIVE on {plain[HOST_ATTR]}, "
                             f"config drive {plain['config_drive'] or 'off'}, no TTP call")

    def _lower_profile_host_never_chosen(self, result: ScenarioResult) -> None:
        hosts = set()
        for _ in range(3):
            hosts.add(self._boot(token=self.env.make_token("high", IMAGE_BYTES)[0])[HOST_ATTR])
        if "host-b" in hosts:
            result.outcome = ACCEPTED
            result.reason = "the scheduler chose host-b (profile low) for profile high"
        else:
            result.outcome = REFUSED
            result.reason = (f"3 launches asking for high all went to {sorted(hosts)}; "
                             "the filter never offered host-b (low)")

    def _encrypted_token(self) -> str:
        digest = ImageDigest("sha512", hashlib.sha512(self.encrypted).digest())
        return create_launch_token(
            self.env.ttp_url, "high", digest, ca_file=str(self.env.ca.cert_file),
            nonce_dir=self.env.directory / "nonces", image_key=self.key)[0]

    def _encrypted_image_boots(self, result: ScenarioResult) -> None:
        server = self._boot(token=self._encrypted_token(), image_id=self.encrypted_id)
        connection = self.computes[server[HOST_ATTR]].driver._host.get_connection()
        secret_uuid = secret_uuid_for(server["id"])
        secret = connection._removed_secrets.get(secret_uuid)
        if secret is None or secret_uuid in connection._secrets or not (
                secret._ephemeral and secret._private):
            raise RuntimeError("the disk secret was not an ephemeral private secret "
                               "undefined after the guest started")
        result.reason = (f"ACTIVE on {server[HOST_ATTR]}: the LUKS root disk opened with "
                         "the key the TTP released with N, given to libvirt as an "
                         "ephemeral private secret, undefined once the guest started")

    def _refused(self, result: ScenarioResult, token: str, *, host: str,
                 ttp_url: str | None = None, image_id: str | None = None) -> None:
        server = self._boot(token=token, host=host, ttp_url=ttp_url, image_id=image_id,
                            expected_state="ERROR")
        result.outcome = REFUSED
        result.reason = server["fault"]["message"][:REASON_CHARS]

    @contextlib.contextmanager
    def _guest_agent(self, server: dict) -> Iterator[str]:
        """The guest agent, fed the config drive the host built for ``server``."""
        mount = pathlib.Path(self.useFixture(fixtures.TempDir()).path)
        self._mount_config_drive(server["id"], mount)
        key_file = mount / "ssh_host_ed25519_key.pub"
        key_file.write_bytes(ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH))
        identity = guest_identity.load_identity(
            nonce_file=mount / "trusted_launch" / "nonce", server_id=server["id"],
            ssh_host_key=key_file)
        agent = ChallengeServer(("127.0.0.1", 0), identity)
        thread = threading.Thread(target=agent.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"127.0.0.1:{agent.server_address[1]}"
        finally:
            agent.shutdown()
            agent.server_close()


def encrypted_image(directory: pathlib.Path) -> tuple[bytes, bytes]:
    """(LUKS qcow2 bytes, image key), made by the tenant tooling."""
    directory.mkdir()
    (directory / "plain.raw").write_bytes(ENCRYPTED_PLAINTEXT)
    key = write_new_key_file(directory / "image.key")
    image = encrypt_image(directory / "plain.raw", directory / "enc.qcow2", key)
    return image.path.read_bytes(), key


def run(eventlog_dir: pathlib.Path, recorder: Recorder) -> unittest.TestResult:
    """Start the environment, run :class:`NovaScenarios` once; the harness's result."""
    host_logs = {"host-a": eventlog_dir / SECUREBOOT_LOG_NAME,
                 "host-b": eventlog_dir / NO_SECURE_BOOT_LOG_NAME}
    with tempfile.TemporaryDirectory(prefix="trusted-launch-nova-demo-") as tmp:
        root = pathlib.Path(tmp)
        states = StateCache(root / "tpm-states")
        with running_environment(root / "nova", states, host_logs) as env:
            NovaScenarios.env = env
            NovaScenarios.encrypted, NovaScenarios.key = encrypted_image(root / "image")
            NovaScenarios.recorder = recorder
            result = unittest.TestResult()
            NovaScenarios("run_scenarios").run(result)
            return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=pathlib.Path, required=True,
                        help="folder with eventlogs/")
    parser.add_argument("--out", type=pathlib.Path, required=True,
                        help="where to write the scenario results (JSON)")
    args = parser.parse_args(argv)
    recorder = Recorder()
    result = run(args.data_dir / "eventlogs", recorder)
    problems = result.errors + result.failures
    if problems:
        for _case, text in problems:
            print(text, file=sys.stderr)
        return 1
    args.out.write_text(json.dumps({"scenarios": [r.to_json() for r in recorder.results]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
