"""SecurityProfileFilter inside Nova's functional harness, through the compute API."""

from __future__ import annotations

from nova.tests.functional.api import client

from tests.nova.base import HOST_ATTR, HOST_PROFILES, SecurityProfileTestBase

NO_VALID_HOST = "No valid host was found"


class BootPlacementTest(SecurityProfileTestBase):
    """Where new servers land, by each source of the requested profile."""

    def test_metadata_high_lands_on_high_host(self) -> None:
        servers = [self._boot(metadata={"trusted_sp": "high"}) for _ in range(2)]
        self.assertEqual({"host-high"}, self._hosts_of(servers))

    def test_metadata_medium_never_lands_on_low_or_unprofiled_host(self) -> None:
        servers = [self._boot(metadata={"trusted_sp": "medium"}) for _ in range(3)]
        self.assertEqual({"host-medium", "host-high"}, self._hosts_of(servers))

    def test_unknown_profile_gets_no_valid_host(self) -> None:
        server = self._boot(metadata={"trusted_sp": "ultra"}, expected_state="ERROR")
        self.assertIn(NO_VALID_HOST, server["fault"]["message"])

    def test_server_without_profile_can_land_anywhere(self) -> None:
        servers = [self._boot() for _ in range(len(HOST_PROFILES))]
        self.assertEqual(set(HOST_PROFILES), self._hosts_of(servers))

    def test_scheduler_hint_and_strictest_source(self) -> None:
        by_hint = self._boot(hints={"trusted_sp": "high"})
        # A weak hint cannot weaken the metadata's request.
        by_both = self._boot(hints={"trusted_sp": "low"}, metadata={"trusted_sp": "high"})
        self.assertEqual({"host-high"}, self._hosts_of([by_hint, by_both]))

    def test_flavor_extra_spec_medium(self) -> None:
        flavor_id = self._create_flavor(
            memory_mb=512, vcpu=1, disk=1, ephemeral=0,
            extra_spec={"trusted_launch:sp": "medium"})
        servers = [self._boot(flavor_id=flavor_id) for _ in range(3)]
        self.assertEqual({"host-medium", "host-high"}, self._hosts_of(servers))

    def test_flavor_extra_spec_format_is_validated_by_the_api(self) -> None:
        flavor_id = self._create_flavor(memory_mb=512, vcpu=1, disk=1, ephemeral=0)
        error = self.assertRaises(
            client.OpenStackApiException, self.admin_api.post_extra_spec,
            flavor_id, {"extra_specs": {"trusted_launch:sp": "High Security"}})
        self.assertEqual(400, error.response.status_code)
        self.assertIn("[a-z0-9_-]{1,32}", error.response.text)

    def test_image_trait_selects_profile_even_if_placement_lets_all_hosts_through(self) -> None:
        # Mis-tag every provider with the trait: placement then passes every
        # host and only the filter keeps the server on the high host.
        self._create_trait("CUSTOM_TRUSTED_SP_HIGH")
        for host in HOST_PROFILES:
            self._set_provider_traits(
                self._get_provider_uuid_by_host(host), ["CUSTOM_TRUSTED_SP_HIGH"])
        image = self._create_image({"trait:CUSTOM_TRUSTED_SP_HIGH": "required"})
        servers = [self._boot(image_uuid=image["id"]) for _ in range(2)]
        self.assertEqual({"host-high"}, self._hosts_of(servers))


class MoveOperationsTest(SecurityProfileTestBase):
    """The requirement still holds when a server is moved."""

    # Let the conductor record a failed move as an instance action, as in
    # production, instead of raising NoValidHost through the API.
    CAST_AS_CALL = False

    def test_cold_and_live_migration_stay_on_high_hosts(self) -> None:
        server, first, second = self._boot_with_two_high_hosts()
        server = self._migrate_server(server)
        self.assertEqual(second, server[HOST_ATTR])
        server = self._confirm_resize(server)
        server = self._live_migrate(server)
        self.assertEqual(first, server[HOST_ATTR])

    def test_evacuate_stays_on_high_hosts(self) -> None:
        server, first, second = self._boot_with_two_high_hosts()
        self._force_down(first)
        server = self._evacuate_server(server, expected_state="SHUTOFF")
        self.assertEqual(second, server[HOST_ATTR])

    def test_cold_migrate_with_one_high_host_gets_no_valid_host(self) -> None:
        server = self._boot(hints={"trusted_sp": "high"})
        self.assertEqual("host-high", server[HOST_ATTR])
        self.api.post_server_action(server["id"], {"migrate": None})
        self._assert_resize_migrate_action_fail(server, "migrate", "NoValidHost")
        self._wait_for_server_parameter(server, {HOST_ATTR: "host-high", "status": "ACTIVE"})

    def test_unshelve_keeps_metadata_profile(self) -> None:
        server = self._boot(metadata={"trusted_sp": "high"})
        self._shelve_server(server)
        self.admin_api.remove_host_from_aggregate(self.aggregates["high"], "host-high")
        self.api.post_server_action(server["id"], {"unshelve": None})
        self._wait_for_action_fail_completion(server, "unshelve", "schedule_instances")
        server = self._wait_for_state_change(server, "SHELVED_OFFLOADED")
        self.assertIsNone(server[HOST_ATTR])

    def _boot_with_two_high_hosts(self) -> tuple[dict, str, str]:
        """A metadata-high server on one of two high hosts, and both hosts' names."""
        self._start_compute("host-high2")
        self.admin_api.add_host_to_aggregate(self.aggregates["high"], "host-high2")
        server = self._boot(metadata={"trusted_sp": "high"})
        first = server[HOST_ATTR]
        (second,) = {"host-high", "host-high2"} - {first}
        self.assertIn(first, {"host-high", "host-high2"})
        return server, first, second

    def _force_down(self, host: str) -> None:
        self.computes[host].stop()
        service_id = self.admin_api.get_services(host=host, binary="nova-compute")[0]["id"]
        self.admin_api.put_service(service_id, {"forced_down": "true"})
