"""The cloud of tools/run-cloud.sh is a working OpenStack: the services, the two
trusted compute hosts, their aggregates, and a plain server booted with the real CLI."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess

import pytest

from trusted_launch.sandbox.cloud import network
from trusted_launch.sandbox.cloud.compute_hosts import COMPUTE_HOSTS
from trusted_launch.sandbox.cloud.hypervisor import virsh
from trusted_launch.sandbox.cloud.identity import ADMIN_CLOUD, DEMO_CLOUD

pytestmark = pytest.mark.timeout(1800)
HOST_PROFILES = {name: profile for name, profile, _ in COMPUTE_HOSTS}


def openstack(cloud, cloud_name: str, *args: str, timeout: float = 600,
              output: bool = True) -> dict | list:
    """The real ``openstack`` CLI of the cloud's virtualenv (JSON output when ``output``)."""
    env = {**os.environ, "OS_CLIENT_CONFIG_FILE": str(cloud.paths.clouds_yaml)}
    result = subprocess.run([cloud.paths.bin("openstack"), "--os-cloud", cloud_name, *args,
                             *(("-f", "json") if output else ())], capture_output=True,
                            text=True, env=env, timeout=timeout, check=False)
    assert result.returncode == 0, f"openstack {' '.join(args)}: {result.stderr[-2000:]}"
    return json.loads(result.stdout) if output else {}


def test_report_names_every_service_and_the_virt_type(cloud_report):
    for name in ("keystone", "glance", "placement", "nova", "neutron", "ttp", "nova-conductor",
                 "nova-scheduler", "neutron-rpc-server", "neutron-dhcp-agent",
                 *(f"nova-compute-{host}" for host in HOST_PROFILES)):
        assert name in cloud_report["services"], name
    assert cloud_report["virt_type"] in ("kvm", "qemu")
    assert cloud_report["virt_type_reason"]


def test_both_computes_are_up_as_distinct_hypervisors(cloud):
    services = openstack(cloud, ADMIN_CLOUD, "compute", "service", "list",
                         "--service", "nova-compute")
    assert {s["Host"]: s["State"] for s in services} == {h: "up" for h in HOST_PROFILES}
    hypervisors = openstack(cloud, ADMIN_CLOUD, "hypervisor", "list")
    assert sorted(h["Hypervisor Hostname"] for h in hypervisors) == sorted(HOST_PROFILES)
    agents = openstack(cloud, ADMIN_CLOUD, "network", "agent", "list")
    assert {a["Host"] for a in agents if a["Alive"]} >= set(HOST_PROFILES)


def test_security_profile_aggregates_hold_their_hosts(cloud):
    for profile in ("low", "medium", "high"):
        aggregate = openstack(cloud, ADMIN_CLOUD, "aggregate", "show", f"sp-{profile}")
        assert aggregate["properties"]["trusted_sp"] == profile
        expected = [host for host, level in HOST_PROFILES.items() if level == profile]
        assert sorted(aggregate["hosts"]) == expected


def test_scheduler_and_computes_run_the_configuration_operators_write(cloud):
    from trusted_launch.deploy.inifile import IniFile

    scheduler = IniFile(cloud.paths.etc / "nova" / "nova.conf")
    assert scheduler.get("filter_scheduler", "enabled_filters").endswith(
        ",SecurityProfileFilter")
    for host, profile in HOST_PROFILES.items():
        compute = IniFile(cloud.paths.etc / "nova" / f"nova-compute-{host}.conf")
        assert compute.get("DEFAULT", "compute_driver") == (
            "trusted_launch.driver.TrustedLibvirtDriver")
        assert compute.get("trusted_launch", "host_security_profile") == profile
        assert (cloud.paths.etc / "nova" / f"ak-cert-{host}.pem").read_text().startswith(
            "-----BEGIN CERTIFICATE-----")


def test_plain_server_boots_active_with_a_fixed_ip_on_a_macvtap_port(cloud):
    name = f"smoke-{os.getpid()}"
    server = openstack(cloud, DEMO_CLOUD, "server", "create", "--image", "tl-tiny",
                       "--flavor", "tl.tiny", "--network", "tl-net", "--wait", name,
                       timeout=900)
    try:
        assert server["status"] == "ACTIVE", server.get("fault")
        address = ipaddress.ip_address(server["addresses"]["tl-net"][0])
        assert address in ipaddress.ip_network(network.TENANT_CIDR)
        placed = openstack(cloud, ADMIN_CLOUD, "server", "show", server["id"])
        host = placed["OS-EXT-SRV-ATTR:host"]
        assert placed["OS-EXT-SRV-ATTR:hypervisor_hostname"] == host
        assert host in HOST_PROFILES
        libvirtd = cloud.table.pid(f"libvirtd-{host}")
        xml = virsh(libvirtd, "dumpxml", placed["OS-EXT-SRV-ATTR:instance_name"]).stdout
        assert "<interface type='direct'" in xml
        assert f"<source dev='{network.HOST_INTERFACE}' mode='bridge'/>" in xml
        assert "machine='pc-i440fx" in xml
    finally:
        openstack(cloud, DEMO_CLOUD, "server", "delete", "--wait", name, output=False)
