"""The guest's systemd-networkd files from Nova's network_data.json."""

from __future__ import annotations

import json

import pytest

from trusted_launch.cmd import guest as guest_cmd
from trusted_launch.guest import network_config
from trusted_launch.guest.network_config import (
    DHCP_FALLBACK,
    FALLBACK_NAME,
    NetworkDataError,
    networkd_files,
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


def test_cli_writes_static_files_from_the_mounted_config_drive(tmp_path, monkeypatch, capsys):
    drive = tmp_path / "drive"
    (drive / "openstack" / "latest").mkdir(parents=True)
    (drive / "openstack" / "latest" / "network_data.json").write_text(
        json.dumps(nova_network_data()))
    monkeypatch.setattr(network_config, "CONFIG_DRIVE_MOUNTS", (str(drive),))
    assert guest_cmd.main(["--write-network-config", str(tmp_path / "net")]) == 0
    written = sorted(p.name for p in (tmp_path / "net").iterdir())
    assert written == ["10-trusted-launch-0.network", FALLBACK_NAME]
    assert "network from" in capsys.readouterr().out


def test_cli_without_config_drive_falls_back_to_dhcp(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(network_config, "CONFIG_DRIVE_MOUNTS", (str(tmp_path / "none"),))
    assert guest_cmd.main(["--write-network-config", str(tmp_path / "net")]) == 0
    assert [p.name for p in (tmp_path / "net").iterdir()] == [FALLBACK_NAME]
    assert "DHCP (no network_data.json)" in capsys.readouterr().out
