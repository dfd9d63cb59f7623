"""The guest's network from Nova's network_data.json: ip commands and networkd files."""

from __future__ import annotations

import json
import subprocess

import pytest

from trusted_launch.cmd import guest as guest_cmd
from trusted_launch.cmd.guest import NEEDS_DHCP
from trusted_launch.guest import network_config
from trusted_launch.guest.network_config import (
    DHCP_FALLBACK,
    FALLBACK_NAME,
    NetworkDataError,
    networkd_files,
    static_commands,
    write_network_config,
)

MAC = "fa:16:3e:12:34:56"


def nova_network_data(kind: str = "ipv4", **network) -> dict:
    """A document shaped like the one Nova writes for one port on one subnet."""
    return {
        "links": [{"id": "tap1", "vif_id": "port-1", "type": "macvtap", "mtu": 1450,
                   "ethernet_mac_address": MAC.upper()}],
        "networks": [{"id": "network0", "type": kind, "link": "tap1",
                      "ip_address": "198.18.0.10", "netmask": "255.255.255.0",
                      "routes": [{"network": "0.0.0.0", "netmask": "0.0.0.0",
                                  "gateway": "198.18.0.1"}],
                      "network_id": "net-1", **network}],
        "services": [],
    }


def test_static_ipv4_matches_the_port_mac_with_address_route_and_mtu():
    files = networkd_files(nova_network_data())
    assert list(files) == ["10-trusted-launch-0.network"]
    text = files["10-trusted-launch-0.network"]
    assert f"MACAddress={MAC}\n" in text
    assert "Address=198.18.0.10/24\n" in text
    assert "Destination=0.0.0.0/0\nGateway=198.18.0.1\n" in text
    assert "MTUBytes=1450\n" in text
    assert "DHCP" not in text


def test_subnet_with_dhcp_asks_dhcp_on_that_link_only():
    text = networkd_files(nova_network_data("ipv4_dhcp"))["10-trusted-launch-0.network"]
    assert "DHCP=ipv4\n" in text
    assert "\nAddress=" not in text


def test_ipv6_static_address_takes_its_prefix_from_the_netmask():
    document = nova_network_data("ipv6", ip_address="2001:db8::5", netmask="ffff:ffff:ffff:ffff::",
                                 routes=[])
    assert "Address=2001:db8::5/64\n" in networkd_files(document)["10-trusted-launch-0.network"]


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d: d["links"][0].update(ethernet_mac_address="nope"), "is not a MAC address"),
    (lambda d: d["links"][0].pop("ethernet_mac_address"), "links[0] has no"),
    (lambda d: d["networks"][0].update(link="tap9"), "names no link"),
    (lambda d: d["networks"][0].update(ip_address="300.1.1.1"), "is not an IP address"),
    (lambda d: d["networks"][0].update(type="ipv4_magic"), "is not one this guest can set"),
    (lambda d: d["networks"][0]["routes"][0].update(gateway="x"), "routes[0] is not"),
    (lambda d: d.update(networks={"a": 1}), "'networks' must be a list"),
])
def test_malformed_documents_name_the_field(mutate, message):
    document = nova_network_data()
    mutate(document)
    with pytest.raises(NetworkDataError, match=message.replace("[", r"\[").replace("]", r"\]")):
        networkd_files(document)


def test_write_keeps_only_the_dhcp_fallback_when_the_document_is_bad(tmp_path):
    source = tmp_path / "network_data.json"
    source.write_text("{not json")
    with pytest.raises(NetworkDataError, match="is not JSON"):
        write_network_config(tmp_path / "out", source)
    assert [p.name for p in (tmp_path / "out").iterdir()] == [FALLBACK_NAME]
    assert (tmp_path / "out" / FALLBACK_NAME).read_text() == DHCP_FALLBACK


def fake_sys_class_net(tmp_path, interfaces: dict[str, str]):
    root = tmp_path / "sys-class-net"
    for name, mac in interfaces.items():
        (root / name).mkdir(parents=True)
        (root / name / "address").write_text(mac + "\n")
    return root


def test_static_commands_set_address_route_and_mtu_on_the_interface_with_that_mac(tmp_path):
    net = fake_sys_class_net(tmp_path, {"eth0": "52:54:00:00:00:01", "eth1": MAC})
    commands, needs_dhcp = static_commands(
        nova_network_data(), lambda mac: network_config.interface_by_mac(mac, str(net)))
    assert commands == [
        ["ip", "link", "set", "dev", "eth1", "mtu", "1450", "up"],
        ["ip", "address", "replace", "198.18.0.10/24", "dev", "eth1"],
        ["ip", "route", "replace", "0.0.0.0/0", "via", "198.18.0.1", "dev", "eth1"],
    ]
    assert needs_dhcp is False


def test_static_commands_leave_dhcp_links_to_networkd():
    commands, needs_dhcp = static_commands(nova_network_data("ipv4_dhcp"), lambda mac: "eth0")
    assert commands == [["ip", "link", "set", "dev", "eth0", "mtu", "1450", "up"]]
    assert needs_dhcp is True


def test_static_commands_name_a_mac_no_interface_has():
    with pytest.raises(NetworkDataError, match=f"no interface has MAC address {MAC}"):
        static_commands(nova_network_data(), lambda mac: None)


def write_config_drive(tmp_path, monkeypatch, document) -> None:
    drive = tmp_path / "drive"
    (drive / "openstack" / "latest").mkdir(parents=True)
    (drive / "openstack" / "latest" / "network_data.json").write_text(json.dumps(document))
    monkeypatch.setattr(network_config, "CONFIG_DRIVE_MOUNTS", (str(drive),))


def test_cli_sets_static_addresses_and_says_no_dhcp_is_needed(tmp_path, monkeypatch, capsys):
    write_config_drive(tmp_path, monkeypatch, nova_network_data())
    ran = []
    monkeypatch.setattr(network_config, "interface_by_mac", lambda mac: "eth0")
    monkeypatch.setattr(network_config.subprocess, "run", lambda argv, **kw: ran.append(argv))
    assert guest_cmd.main(["--configure-network", str(tmp_path / "net")]) == 0
    assert ["ip", "address", "replace", "198.18.0.10/24", "dev", "eth0"] in ran
    written = sorted(p.name for p in (tmp_path / "net").iterdir())
    assert written == ["10-trusted-launch-0.network", FALLBACK_NAME]
    assert "static addresses set" in capsys.readouterr().out


def test_cli_reports_a_failed_ip_command_and_asks_for_dhcp(tmp_path, monkeypatch, capsys):
    write_config_drive(tmp_path, monkeypatch, nova_network_data())
    monkeypatch.setattr(network_config, "interface_by_mac", lambda mac: "eth0")

    def failing(argv, **kwargs):
        raise subprocess.CalledProcessError(2, argv)

    monkeypatch.setattr(network_config.subprocess, "run", failing)
    assert guest_cmd.main(["--configure-network", str(tmp_path / "net")]) == NEEDS_DHCP
    assert "ip link set dev eth0 mtu 1450 up failed" in capsys.readouterr().err


def test_cli_without_config_drive_falls_back_to_dhcp(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(network_config, "CONFIG_DRIVE_MOUNTS", (str(tmp_path / "none"),))
    assert guest_cmd.main(["--configure-network", str(tmp_path / "net")]) == NEEDS_DHCP
    assert [p.name for p in (tmp_path / "net").iterdir()] == [FALLBACK_NAME]
    assert "DHCP (no network_data.json); DHCP needed" in capsys.readouterr().out
