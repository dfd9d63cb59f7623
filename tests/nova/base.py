"""Nova functional-test base with three profile aggregates and the filter enabled."""

from __future__ import annotations

import time
import warnings
from typing import Any

import nova.conf
from nova.tests.functional import integrated_helpers
from sqlalchemy import exc as sqla_exc

from trusted_launch.sandbox.nova_harness import API_PASTE_INI, FILTER_PATH, HOST_ATTR

CONF = nova.conf.CONF
#: compute host -> security profile of its aggregate (None: in no aggregate).
HOST_PROFILES: dict[str, str | None] = {
    "host-low": "low", "host-medium": "medium", "host-high": "high", "host-plain": None,
}


class SecurityProfileTestBase(integrated_helpers._IntegratedTestBase):
    """Four MediumFakeDriver computes: one per profile aggregate and one in none."""

    ADMIN_API = True
    microversion = "latest"

    def _setup_services(self) -> None:
        # Nova 34's DB API uses orm.noload(), deprecated in SQLAlchemy 2.1;
        # Nova's WarningsFixture (reset after each test) makes that an error.
        warnings.filterwarnings("ignore", message=r"The noload\(\) option is deprecated",
                                category=sqla_exc.SADeprecationWarning)
        self.flags(api_paste_config=str(API_PASTE_INI), group="wsgi")
        self.flags(compute_driver="fake.MediumFakeDriver")
        self.flags(available_filters=[*CONF.filter_scheduler.available_filters, FILTER_PATH],
                   enabled_filters=[*CONF.filter_scheduler.enabled_filters,
                                    "SecurityProfileFilter"],
                   group="filter_scheduler")
        super()._setup_services()
        self.aggregates = {profile: self._profile_aggregate(profile)
                           for profile in ("low", "medium", "high")}
        for host, profile in HOST_PROFILES.items():
            if profile is not None:
                self.admin_api.add_host_to_aggregate(self.aggregates[profile], host)

    def _setup_compute_service(self) -> Any:
        for host in HOST_PROFILES:
            self._start_compute(host)
        return self.computes["host-low"]

    def _clear_attrs(self) -> None:
        # Nova deletes public instance attributes after each test; pytest's
        # unittest runner deletes the bound test method itself afterwards.
        name = self._testMethodName
        saved = self.__dict__.get(name)
        super()._clear_attrs()
        if saved is not None:
            self.__dict__[name] = saved

    def _profile_aggregate(self, profile: str) -> int:
        aggregate_id = self._create_aggregate(f"sp-{profile}")
        self.admin_api.post_aggregate_action(
            aggregate_id, {"set_metadata": {"metadata": {"trusted_sp": profile}}})
        return aggregate_id

    def _boot(self, *, metadata: dict | None = None, hints: dict | None = None,
              flavor_id: str | None = None, image_uuid: str | None = None,
              expected_state: str = "ACTIVE") -> dict:
        server = self._build_server(flavor_id=flavor_id, image_uuid=image_uuid, networks="none")
        if metadata:
            server["metadata"] = metadata
        body: dict[str, Any] = {"server": server}
        if hints:
            body["os:scheduler_hints"] = hints
        created = self.api.post_server(body)
        return self._wait_for_status(created["id"], expected_state)

    def _wait_for_status(self, server_id: str, status: str, timeout: float = 20.0) -> dict:
        """Poll more often than Nova's helpers (every 0.5 s) so each boot costs less."""
        deadline = time.monotonic() + timeout
        while True:
            server = self.api.get_server(server_id)
            settled = server["status"] == status and (status != "ERROR" or "fault" in server)
            if settled or time.monotonic() > deadline:
                self.assertEqual(status, server["status"], server.get("fault"))
                return server
            time.sleep(0.2)

    def _hosts_of(self, servers: list[dict]) -> set[str]:
        return {server[HOST_ATTR] for server in servers}
