"""Guests take their fixed IP by DHCP from Neutron's own DHCP agent (dnsmasq).

A plain server without a config drive has nothing but DHCP to learn its
address from: it must answer ping from the tenant's namespace at its Neutron
fixed IP, and dnsmasq's log must show the lease.  A trusted guest (config
drive, network_data.json saying ``ipv4_dhcp``) takes its address the same way
and still answers the tenant's challenge.
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import re
import subprocess
import time

import pytest

from trusted_launch.sandbox.cloud import bringup, dhcp, network
from trusted_launch.sandbox.cloud.scenarios import Clients, Launch, Scenarios
from trusted_launch.sandbox.cloud.scenarios import cloud_target as make_target

pytestmark = pytest.mark.timeout(2400)
PING_TIMEOUT_S = 900  # a TCG guest on a loaded machine; networkd starts late under TCG
POLL_S = 5


@pytest.fixture(scope="module")
def target(cloud):
    return make_target(cloud.paths.root, cloud.paths.venv)


@pytest.fixture(scope="module")
def dhcp_port(cloud) -> dict:
    conn = cloud.connection()
    net = conn.network.find_network(bringup.NETWORK)
    ports = list(conn.network.ports(network_id=net.id, device_owner="network:dhcp"))
    assert len(ports) == 1, f"DHCP ports on {bringup.NETWORK}: {ports}"
    return {"network_id": net.id, "port": ports[0]}


def _dnsmasq_log(cloud, network_id: str) -> str:
    path = cloud.paths.log / "dnsmasq" / network_id / "dhcp_dns_log"
    return path.read_text(errors="replace") if path.exists() else ""


def _leased(log: str, address: str, mac: str) -> bool:
    return re.search(rf"DHCPACK\(\S+\) {re.escape(address)} {re.escape(mac)}", log) is not None


def _port_of(clients: Clients, server_id: str) -> tuple[str, str]:
    """(fixed IPv4, MAC address) of the server's port on the tenant network."""
    ports = clients.openstack("port", "list", "--server", server_id, "--long", admin=True)
    assert len(ports) == 1, ports
    fixed = ports[0]["Fixed IP Addresses"]
    return fixed[0]["ip_address"], ports[0]["MAC Address"]


def _pings(namespace: str, address: str) -> bool:
    return subprocess.run(["ip", "netns", "exec", namespace, "ping", "-c", "1", "-W", "2",
                           address], capture_output=True, check=False).returncode == 0


def _wait_for_ping(namespace: str, address: str) -> float:
    started = time.monotonic()
    while not _pings(namespace, address):
        assert time.monotonic() - started < PING_TIMEOUT_S, (
            f"{address} did not answer ping from {namespace} in {PING_TIMEOUT_S} s")
        time.sleep(POLL_S)
    return time.monotonic() - started


def test_dhcp_agent_serves_the_tenant_subnet_from_a_bound_macvlan_port(cloud, dhcp_port):
    conn = cloud.connection()
    agents = [agent for agent in conn.network.agents(binary=bringup.DHCP_AGENT)]
    assert [(agent.host, agent.is_alive) for agent in agents] == [
        (bringup.DHCP_AGENT_HOST, True)]
    subnet = conn.network.find_subnet(bringup.SUBNET)
    assert subnet.is_dhcp_enabled
    assert subnet.allocation_pools == [{"start": network.ALLOCATION_POOL[0],
                                        "end": network.ALLOCATION_POOL[1]}]
    port = dhcp_port["port"]
    assert port.binding_host_id == bringup.DHCP_AGENT_HOST
    assert port.binding_vif_type == "macvtap", port.binding_vif_type
    network_id = dhcp_port["network_id"]
    assert dhcp.dnsmasq_pid(cloud.paths.data / "neutron" / "dhcp", network_id) is not None
    links = subprocess.run(["ip", "-n", dhcp.namespace(network_id), "-d", "-o", "link"],
                           capture_output=True, text=True, check=True).stdout
    macvlan = [line for line in links.splitlines() if port.mac_address in line]
    assert len(macvlan) == 1, links
    assert "macvlan mode bridge" in macvlan[0], macvlan[0]
    addresses = subprocess.run(["ip", "-n", dhcp.namespace(network_id), "-o", "addr"],
                               capture_output=True, text=True, check=True).stdout
    fixed = port.fixed_ips[0]["ip_address"]
    assert ipaddress.ip_address(fixed) in ipaddress.ip_network(network.TENANT_CIDR)
    assert f"{fixed}/24" in addresses
    # The tenant's side of the segment reaches dnsmasq's port.
    assert _pings(network.NAMESPACE, fixed)


def test_servers_take_their_fixed_ip_by_dhcp(cloud, target, dhcp_port):
    """A plain server without a config drive, and a trusted guest, side by side."""
    scenarios = Scenarios(target, recorder=None)
    clients = scenarios.clients
    try:
        plain = scenarios.plain("dhcp-plain")
        trusted = scenarios.trusted("dhcp-trusted", profile="low")

        def plain_boots() -> tuple[Launch, float]:
            launch = scenarios.active(plain, time.perf_counter())
            return launch, _wait_for_ping(target.namespace, launch.address)

        def trusted_answers() -> tuple[Launch, dict]:
            started = time.perf_counter()
            launch = scenarios.active(trusted, started)
            return launch, scenarios.answered(launch, started)

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            plain_future, trusted_future = pool.submit(plain_boots), pool.submit(
                trusted_answers)
            (plain_launch, _), (trusted_launch, answer) = (plain_future.result(),
                                                           trusted_future.result())
        assert clients.show(plain.server_id)["config_drive"] in ("", False, None)
        assert clients.show(trusted.server_id)["config_drive"] not in ("", False, None)
        assert answer, "the trusted guest did not answer"
        log = _dnsmasq_log(cloud, dhcp_port["network_id"])
        for launch in (plain_launch, trusted_launch):
            address, mac = _port_of(clients, launch.server_id)
            assert address == launch.address
            assert _leased(log, address, mac), (
                f"no DHCPACK for {launch.name} ({address}, {mac}) in dnsmasq's log")
        console = clients.run([target.openstack, "--os-cloud", target.demo_cloud, "console",
                               "log", "show", trusted.server_id])
        assert "DHCP needed" in console, console[-2000:]
    finally:
        clients.delete(scenarios.created)
