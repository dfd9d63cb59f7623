"""Base class of the trusted launch scenario tests: clients, launches, waits, the challenge.

Tempest's own service clients do everything Nova, Glance and Neutron see (the
tenant as ``primary``, the operator as ``admin`` only to read which host a
server went to and which hosts meet which profile); the trusted_launch client
library does the tenant's own part (:mod:`trusted_launch_tempest_plugin.tenant`).
"""

from __future__ import annotations

import shutil
import tempfile

from tempest import config, test
from tempest.common import waiters
from tempest.lib import exceptions as lib_exc
from tempest.lib.common.utils import data_utils, test_utils

from trusted_launch_tempest_plugin import tenant

CONF = config.CONF
HOST_ATTR = "OS-EXT-SRV-ATTR:host"
CONSOLE_LINES = 40  # of the console log, in a failure's message


class TrustedLaunchScenarioTest(test.BaseTestCase):
    """Skips unless ``[service_available] trusted_launch`` and the TTP URL are set."""

    credentials = ["primary", "admin"]

    @classmethod
    def skip_checks(cls):
        super().skip_checks()
        if not CONF.service_available.trusted_launch:
            raise cls.skipException("[service_available] trusted_launch is false")
        options = CONF.trusted_launch
        for name in ("ttp_url", "image_ref", "flavor_ref"):
            if not getattr(options, name):
                raise cls.skipException(f"[trusted_launch] {name} is not set")
        if not CONF.compute.fixed_network_name:
            raise cls.skipException("[compute] fixed_network_name is not set (the network "
                                    "the tenant reaches its guests on)")

    @classmethod
    def setup_clients(cls):
        super().setup_clients()
        cls.servers_client = cls.os_primary.servers_client
        cls.images_client = cls.os_primary.image_client_v2
        cls.networks_client = cls.os_primary.networks_client
        cls.admin_servers_client = cls.os_admin.servers_client
        cls.admin_aggregates_client = cls.os_admin.aggregates_client

    @classmethod
    def resource_setup(cls):
        super().resource_setup()
        cls.options = CONF.trusted_launch
        cls.network_name = CONF.compute.fixed_network_name
        networks = cls.networks_client.list_networks(name=cls.network_name)["networks"]
        if not networks:
            raise cls.skipException(f"no network named {cls.network_name}")
        cls.network_id = networks[0]["id"]
        if cls.options.nonce_dir:
            cls.nonce_dir = cls.options.nonce_dir
        else:
            cls.nonce_dir = tempfile.mkdtemp(prefix="tl-tempest-nonces-")
            cls.addClassResourceCleanup(shutil.rmtree, cls.nonce_dir, True)

    # The cloud's hosts ------------------------------------------------------------------
    @classmethod
    def host_profiles(cls) -> dict[str, str]:
        """host -> the strongest profile it meets (config, else the trusted_sp aggregates)."""
        if cls.options.host_profiles:
            return dict(cls.options.host_profiles)
        rank = {name: index for index, name in enumerate(cls.options.profiles)}
        hosts: dict[str, str] = {}
        for aggregate in cls.admin_aggregates_client.list_aggregates()["aggregates"]:
            profile = (aggregate.get("metadata") or {}).get("trusted_sp")
            if profile not in rank:
                continue
            for host in aggregate.get("hosts") or []:
                if host not in hosts or rank[profile] > rank[hosts[host]]:
                    hosts[host] = profile
        return hosts

    @classmethod
    def meets(cls, host_profile: str, wanted: str) -> bool:
        """Whether a host whose strongest profile is ``host_profile`` meets ``wanted``."""
        profiles = list(cls.options.profiles)
        return profiles.index(host_profile) >= profiles.index(wanted)

    # Launches ---------------------------------------------------------------------------
    @classmethod
    def image(cls, image_id: str) -> dict:
        return cls.images_client.show_image(image_id)

    @classmethod
    def token(cls, digest, image_key: bytes | None = None) -> tuple[str, str]:
        """``(token, nonce file)`` for profile ``[trusted_launch] profile``."""
        return tenant.launch_token(cls.options.ttp_url, cls.options.ca_file,
                                   cls.options.profile, digest, cls.nonce_dir, image_key)

    @classmethod
    def launch(cls, token: str, image_ref: str | None = None,
               flavor_ref: str | None = None) -> str:
        """Create a server that requests a trusted launch; its ID (deleted at class end)."""
        body = cls.servers_client.create_server(
            name=data_utils.rand_name(prefix="tempest", name="trusted-launch"),
            imageRef=image_ref or cls.options.image_ref,
            flavorRef=flavor_ref or cls.options.flavor_ref,
            networks=[{"uuid": cls.network_id}], config_drive=True,
            metadata=tenant.trusted_metadata(cls.options.profile, cls.options.ttp_url,
                                             token))
        server_id = body["server"]["id"]
        cls.addClassResourceCleanup(waiters.wait_for_server_termination,
                                    cls.servers_client, server_id)
        cls.addClassResourceCleanup(test_utils.call_and_ignore_notfound_exc,
                                    cls.servers_client.delete_server, server_id)
        return server_id

    @classmethod
    def wait_active(cls, server_id: str) -> dict:
        """The server (as the admin sees it, with its host) once it is ACTIVE."""
        waiters.wait_for_server_status(cls.servers_client, server_id, "ACTIVE")
        return cls.admin_servers_client.show_server(server_id)["server"]

    @classmethod
    def wait_error(cls, server_id: str) -> dict:
        """The server (as the admin sees it, with its fault) once it is ERROR."""
        waiters.wait_for_server_status(cls.servers_client, server_id, "ERROR",
                                       raise_on_error=False)
        return cls.admin_servers_client.show_server(server_id)["server"]

    @classmethod
    def agent_address(cls, server: dict) -> str:
        for entry in (server.get("addresses") or {}).get(cls.network_name) or []:
            if entry.get("version", 4) == 4 and entry.get("addr"):
                return f"{entry['addr']}:{cls.options.agent_port}"
        raise AssertionError(f"server {server['id']} has no IPv4 address on "
                             f"{cls.network_name}: {server.get('addresses')}")

    # The tenant's challenge -------------------------------------------------------------
    @classmethod
    def challenge(cls, server: dict, nonce_file: str) -> dict:
        """One challenge of the server's agent (ChallengeFailed if it does not prove N)."""
        return tenant.challenge(cls.agent_address(server), server["id"], nonce_file,
                                cls.options.tenant_namespace, cls.options.challenge_timeout)

    @classmethod
    def console_tail(cls, server_id: str) -> str:
        """The last CONSOLE_LINES lines of the server's console log, or why there are none."""
        try:
            body = cls.servers_client.get_console_output(server_id, length=CONSOLE_LINES)
        except lib_exc.TempestException as exc:
            return f"(no console log: {exc})"
        return body.get("output") or "(the console log is empty)"

    @classmethod
    def wait_for_answer(cls, server: dict, nonce_file: str) -> dict:
        """Challenge until the booting guest's agent proves N, within ``answer_timeout``
        (tenant.AnswerTimeout otherwise, saying what it waited for); a wrong answer and a
        kernel panic on the guest's console fail at once."""
        return tenant.wait_for_proof(
            cls.agent_address(server), server["id"], nonce_file,
            namespace=cls.options.tenant_namespace,
            answer_timeout=cls.options.answer_timeout,
            challenge_timeout=cls.options.challenge_timeout,
            console=lambda: cls.console_tail(server["id"]))
