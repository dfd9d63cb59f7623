"""Trusted launch scenarios against a real cloud, from the tenant's side.

* a trusted boot is accepted on a host that meets the profile, and the guest
  proves N to the tenant's challenge; a challenge keyed with another N fails;
  a hard reboot re-attests and the guest proves the same N again;
* the scheduler never picks a host that does not meet the profile;
* an image whose bytes are not the token's H is refused, the fault names why;
* a LUKS-encrypted image boots with the key only the TTP releases.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile

from tempest import config
from tempest.lib import decorators
from tempest.lib.common.utils import data_utils, test_utils

from trusted_launch.client.image_encryption import encrypt_image, write_new_key_file
from trusted_launch.crypto.digest import ImageDigest
from trusted_launch_tempest_plugin import tenant
from trusted_launch_tempest_plugin.tests.scenario.base import HOST_ATTR, TrustedLaunchScenarioTest

CONF = config.CONF


class TrustedBootTest(TrustedLaunchScenarioTest):
    """One trusted server, challenged by the tenant; then a wrong N; then a hard reboot."""

    @classmethod
    def resource_setup(cls):
        super().resource_setup()
        image = cls.image(cls.options.image_ref)
        token, cls.nonce_file = cls.token(tenant.glance_digest(image))
        cls.server = cls.wait_active(cls.launch(token))

    @decorators.idempotent_id("5b0f6f4e-4f6e-4d55-9f61-2a3c1c0e7a01")
    def test_trusted_boot_accepted_and_verified_by_the_tenant(self):
        host = self.server[HOST_ATTR]
        profile = self.host_profiles().get(host)
        self.assertIsNotNone(profile, f"{host} is in no trusted_sp aggregate")
        self.assertTrue(self.meets(profile, self.options.profile),
                        f"accepted on {host} ({profile}), which does not meet "
                        f"{self.options.profile}")
        answer = self.wait_for_answer(self.server, self.nonce_file)
        self.assertTrue(answer["verified"])
        self.assertEqual(self.server["id"], answer["server_id"])
        self.assertTrue(answer["ssh_host_key_fingerprint"].startswith("SHA256:"))

    @decorators.idempotent_id("0c9f1d0b-9d1e-4c68-8e56-3d7a4b1f2e02")
    def test_challenge_with_another_nonce_is_refused(self):
        self.wait_for_answer(self.server, self.nonce_file)  # the guest is up and knows N
        _, other_nonce_file = self.token(tenant.glance_digest(self.image(
            self.options.image_ref)))  # a fresh N this guest never saw
        error = self.assertRaises(tenant.ChallengeFailed, self.challenge, self.server,
                                  other_nonce_file)
        self.assertIn("does not prove knowledge of the launch nonce (MAC mismatch)",
                      str(error))

    @decorators.idempotent_id("a6d3e2c4-1b7f-4f0a-b8d9-6e5f4c3b2a03")
    def test_hard_reboot_reattests_and_the_guest_proves_the_same_nonce(self):
        self.wait_for_answer(self.server, self.nonce_file)
        self.servers_client.reboot_server(self.server["id"], type="HARD")
        # The API sets the reboot task state before it answers: ACTIVE with no task
        # state is the end of this reboot.
        rebooted = self.wait_active(self.server["id"])
        self.assertEqual(self.server[HOST_ATTR], rebooted[HOST_ATTR])
        actions = self.servers_client.list_instance_actions(self.server["id"])
        self.assertIn("reboot", [a["action"] for a in actions["instanceActions"]])
        # The driver attests the host again before the guest is powered on (it fails
        # the reboot otherwise); the guest then proves the N of its original token.
        answer = self.wait_for_answer(rebooted, self.nonce_file)
        self.assertEqual(self.server["id"], answer["server_id"])


class WeakHostNeverChosenTest(TrustedLaunchScenarioTest):
    """Servers asking for the profile never land on a host that does not meet it."""

    @classmethod
    def resource_setup(cls):
        super().resource_setup()
        profiles = cls.host_profiles()
        cls.weak = sorted(h for h, p in profiles.items()
                          if not cls.meets(p, cls.options.profile))
        cls.strong = sorted(h for h, p in profiles.items()
                            if cls.meets(p, cls.options.profile))
        if not cls.weak or not cls.strong:
            raise cls.skipException(
                f"needs hosts both meeting and not meeting {cls.options.profile} "
                f"(host profiles: {profiles})")
        services = cls.os_admin.services_client.list_services(
            binary="nova-compute")["services"]
        usable = {s["host"] for s in services if s["state"] == "up"
                  and s["status"] == "enabled"}
        if not set(cls.weak) & usable:
            raise cls.skipException(f"no weak host ({cls.weak}) is up and enabled: the "
                                    "scheduler could not pick one anyway")
        token_image = cls.image(CONF.compute.image_ref)
        cls.servers = []
        for _ in range(cls.options.scheduling_launches):
            token, _ = cls.token(tenant.glance_digest(token_image))
            cls.servers.append(cls.launch(token, CONF.compute.image_ref,
                                          CONF.compute.flavor_ref))

    @decorators.idempotent_id("e1f2a3b4-c5d6-4e7f-8a9b-0c1d2e3f4a04")
    def test_host_that_does_not_meet_the_profile_is_never_chosen(self):
        hosts = [self.wait_active(server_id)[HOST_ATTR] for server_id in self.servers]
        for host in hosts:
            self.assertNotIn(host, self.weak, f"scheduled onto {host}, which does not meet "
                                              f"{self.options.profile}")
            self.assertIn(host, self.strong)


class TamperedImageRefusedTest(TrustedLaunchScenarioTest):
    """A token whose H is not the digest of the image's bytes: the host refuses the launch."""

    @decorators.idempotent_id("7d8e9f0a-1b2c-4d3e-9f4a-5b6c7d8e9f05")
    def test_image_that_does_not_match_the_token_is_refused(self):
        other = hashlib.sha512(b"not the bytes Glance holds\n").digest()
        token, _ = self.token(ImageDigest("sha512", other))
        server = self.wait_error(self.launch(token))
        message = (server.get("fault") or {}).get("message", "")
        self.assertIn("image_digest_mismatch", message, f"fault: {server.get('fault')}")


class EncryptedImageBootsTest(TrustedLaunchScenarioTest):
    """The tenant encrypts the image; the TTP releases its key only to an attested host."""

    @classmethod
    def skip_checks(cls):
        super().skip_checks()
        if not CONF.trusted_launch.encrypted_images:
            raise cls.skipException("[trusted_launch] encrypted_images is false")
        if not CONF.trusted_launch.image_file:
            raise cls.skipException("[trusted_launch] image_file is not set (the local "
                                    "copy of image_ref to encrypt)")

    @classmethod
    def resource_setup(cls):
        super().resource_setup()
        work = tempfile.mkdtemp(prefix="tl-tempest-luks-")
        cls.addClassResourceCleanup(shutil.rmtree, work, True)
        key = write_new_key_file(os.path.join(work, "image.key"))
        encrypted = encrypt_image(cls.options.image_file, os.path.join(work, "image.qcow2"),
                                  key)
        image = cls.images_client.create_image(
            name=data_utils.rand_name(prefix="tempest", name="trusted-launch-luks"),
            disk_format="qcow2", container_format="bare", visibility="private")
        cls.addClassResourceCleanup(test_utils.call_and_ignore_notfound_exc,
                                    cls.images_client.delete_image, image["id"])
        with open(encrypted.path, "rb") as data:
            cls.images_client.store_image_file(image["id"], data)
        token, cls.nonce_file = cls.token(encrypted.digest, image_key=key)
        cls.server_id = cls.launch(token, image["id"])

    @decorators.idempotent_id("3f4a5b6c-7d8e-4f9a-8b1c-2d3e4f5a6b06")
    def test_encrypted_image_boots_and_the_guest_proves_n(self):
        server = self.wait_active(self.server_id)
        profile = self.host_profiles().get(server[HOST_ATTR])
        self.assertTrue(profile and self.meets(profile, self.options.profile))
        answer = self.wait_for_answer(server, self.nonce_file)
        self.assertEqual(self.server_id, answer["server_id"])
