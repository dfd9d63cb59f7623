"""The guest's network from the config drive's network_data.json.

Nova writes ``openstack/latest/network_data.json`` to the config drive: one
link per port (its MAC address) and one network per fixed IP (``ipv4`` for a
subnet without DHCP, ``ipv4_dhcp`` with it). Static addresses, routes and MTUs
are set at once with iproute2 (:func:`static_commands`, on the interface with
the link's MAC address): no network daemon stands between boot and the
agent. :func:`networkd_files` also describes every link for systemd-networkd
(matched by MAC address; DHCP where the subnet has it), and
:data:`DHCP_FALLBACK` configures every other Ethernet interface by DHCP, so a
VM without a config drive still comes up once networkd runs. A malformed
document raises :class:`NetworkDataError` naming the field.
"""

from __future__ import annotations

import ipaddress
import json
import os
import pathlib
import re
import subprocess
from collections.abc import Callable

from trusted_launch.guest.identity import CONFIG_DRIVE_MOUNTS

MAX_NETWORK_DATA_BYTES = 1024 * 1024
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
FALLBACK_NAME = "99-trusted-launch-dhcp.network"
DHCP_FALLBACK = ("# written by trusted-launch-guest: DHCP on every other Ethernet interface\n"
                 "[Match]\nType=ether\n\n[Network]\nDHCP=yes\nLinkLocalAddressing=no\n")
STATIC_TYPES = {"ipv4", "ipv6"}
DHCP_TYPES = {"ipv4_dhcp": "ipv4", "ipv6_dhcp": "ipv6", "ipv6_dhcpv6-stateful": "ipv6",
              "ipv6_dhcpv6-stateless": "ipv6", "ipv6_slaac": "ipv6"}


class NetworkDataError(ValueError):
    """network_data.json is unreadable or describes something this guest cannot set."""


def _field(document: dict, name: str, where: str) -> object:
    if name not in document:
        raise NetworkDataError(f"{where} has no '{name}'")
    return document[name]


def _list(document: dict, name: str) -> list:
    value = document.get(name, [])
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise NetworkDataError(f"'{name}' must be a list of objects")
    return value


def _mac_by_link(document: dict) -> dict[str, str]:
    macs: dict[str, str] = {}
    for index, link in enumerate(_list(document, "links")):
        where = f"links[{index}]"
        mac = str(_field(link, "ethernet_mac_address", where)).lower()
        if not MAC_RE.match(mac):
            raise NetworkDataError(f"{where}.ethernet_mac_address {mac!r} is not a MAC address")
        macs[str(_field(link, "id", where))] = mac
    return macs


def _mtu_by_link(document: dict) -> dict[str, int]:
    mtus = {}
    for link in _list(document, "links"):
        mtu = link.get("mtu")
        if isinstance(mtu, int) and not isinstance(mtu, bool) and 576 <= mtu <= 65535:
            mtus[str(link["id"])] = mtu
    return mtus


def _prefix_length(netmask: str, bits: int) -> int:
    """A prefix length from ``24``, ``255.255.255.0`` or ``ffff:ffff::``."""
    if netmask.isdigit():
        return int(netmask)
    value = int(ipaddress.ip_address(netmask))
    length = bin(value).count("1")
    if value != ((1 << length) - 1) << (bits - length):
        raise ValueError(f"{netmask} is not a contiguous netmask")
    return length


def _interface(network: dict, where: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    address = _field(network, "ip_address", where)
    netmask = _field(network, "netmask", where)
    try:
        ip = ipaddress.ip_address(address)
        return ipaddress.ip_interface(f"{ip}/{_prefix_length(str(netmask), ip.max_prefixlen)}")
    except ValueError:
        raise NetworkDataError(f"{where}: {address!r}/{netmask!r} is not an IP address "
                               "and netmask") from None


def _routes(network: dict, where: str) -> list[tuple[str, str]]:
    """(destination/prefix, gateway) of every route of one network."""
    routes = []
    for index, route in enumerate(_list(network, "routes")):
        here = f"{where}.routes[{index}]"
        try:
            gateway = ipaddress.ip_address(_field(route, "gateway", here))
            network_address = ipaddress.ip_address(_field(route, "network", here))
            prefix = _prefix_length(str(_field(route, "netmask", here)),
                                    network_address.max_prefixlen)
            destination = ipaddress.ip_network(f"{network_address}/{prefix}")
        except ValueError:
            raise NetworkDataError(f"{here} is not a network, netmask and gateway") from None
        routes.append((str(destination), str(gateway)))
    return routes


def _route_lines(network: dict, where: str) -> list[str]:
    return [f"\n[Route]\nDestination={destination}\nGateway={gateway}\n"
            for destination, gateway in _routes(network, where)]


def _network_section(networks: list[tuple[int, dict]]) -> tuple[list[str], list[str]]:
    """([Network] lines, extra sections) for the networks of one link."""
    lines, extra, dhcp = [], [], set()
    for index, network in networks:
        where = f"networks[{index}]"
        kind = str(_field(network, "type", where))
        if kind in STATIC_TYPES:
            lines.append(f"Address={_interface(network, where).with_prefixlen}")
            extra.extend(_route_lines(network, where))
        elif kind in DHCP_TYPES:
            dhcp.add(DHCP_TYPES[kind])
        else:
            raise NetworkDataError(f"{where}.type {kind!r} is not one this guest can set")
    if dhcp:
        lines.append("DHCP=" + ("yes" if dhcp == {"ipv4", "ipv6"} else dhcp.pop()))
    return lines, extra


def _networks_by_link(document: object) -> dict[str, list[tuple[int, dict]]]:
    if not isinstance(document, dict):
        raise NetworkDataError("network_data.json must be a JSON object")
    macs = _mac_by_link(document)
    by_link: dict[str, list[tuple[int, dict]]] = {}
    for index, network in enumerate(_list(document, "networks")):
        link = str(_field(network, "link", f"networks[{index}]"))
        if link not in macs:
            raise NetworkDataError(f"networks[{index}].link {link!r} names no link")
        by_link.setdefault(link, []).append((index, network))
    return by_link


def networkd_files(document: object) -> dict[str, str]:
    """{file name: content} of systemd-networkd files for ``document`` (no fallback)."""
    by_link = _networks_by_link(document)
    macs, mtus = _mac_by_link(document), _mtu_by_link(document)
    files = {}
    for number, (link, networks) in enumerate(sorted(by_link.items())):
        lines, extra = _network_section(networks)
        mtu = f"\n[Link]\nMTUBytes={mtus[link]}\n" if link in mtus else ""
        files[f"10-trusted-launch-{number}.network"] = (
            f"# written by trusted-launch-guest from network_data.json, link {link}\n"
            f"[Match]\nMACAddress={macs[link]}\n{mtu}\n[Network]\nLinkLocalAddressing=no\n"
            + "".join(f"{line}\n" for line in lines) + "".join(extra))
    return files


def static_commands(document: object, interface_of: Callable[[str], str | None]
                    ) -> tuple[list[list[str]], bool]:
    """(``ip`` commands setting every static address, route and MTU, whether any link
    still needs DHCP). ``interface_of`` maps a MAC address to an interface name."""
    by_link = _networks_by_link(document)
    macs, mtus = _mac_by_link(document), _mtu_by_link(document)
    commands, needs_dhcp = [], not by_link
    for link, networks in sorted(by_link.items()):
        static = [(i, n) for i, n in networks if str(n.get("type")) in STATIC_TYPES]
        needs_dhcp |= len(static) < len(networks)
        _network_section(networks)  # validates every network of the link
        interface = interface_of(macs[link])
        if interface is None:
            raise NetworkDataError(f"no interface has MAC address {macs[link]} (link {link})")
        mtu = ["mtu", str(mtus[link])] if link in mtus else []
        commands.append(["ip", "link", "set", "dev", interface, *mtu, "up"])
        for index, network in static:
            where = f"networks[{index}]"
            commands.append(["ip", "address", "replace",
                             _interface(network, where).with_prefixlen, "dev", interface])
            for destination, gateway in _routes(network, where):
                commands.append(["ip", "route", "replace", destination, "via", gateway,
                                 "dev", interface])
    return commands, needs_dhcp


def interface_by_mac(mac: str, sys_class_net: str = "/sys/class/net") -> str | None:
    """The name of the interface whose MAC address is ``mac``, or None."""
    for entry in sorted(pathlib.Path(sys_class_net).iterdir()):
        try:
            if (entry / "address").read_text(encoding="ascii").strip().lower() == mac:
                return entry.name
        except OSError:
            continue
    return None


def configure_network(directory: str | os.PathLike, network_data: str | os.PathLike | None,
                      run: Callable[[list[str]], object] = lambda argv: subprocess.run(
                          argv, check=True, capture_output=True, timeout=30)) -> bool:
    """Set the static part of ``network_data`` now and write the networkd files (with the
    DHCP fallback) into ``directory``; True when some interface still needs DHCP."""
    write_network_config(directory, network_data)
    if network_data is None:
        return True
    commands, needs_dhcp = static_commands(read_network_data(network_data), interface_by_mac)
    for argv in commands:
        try:
            run(argv)
        except (OSError, subprocess.SubprocessError) as exc:
            raise NetworkDataError(f"{' '.join(argv)} failed: {exc}") from None
    return needs_dhcp


def default_network_data() -> pathlib.Path | None:
    """``openstack/latest/network_data.json`` on the first mounted config drive, or None."""
    for mount in CONFIG_DRIVE_MOUNTS:
        candidate = pathlib.Path(mount) / "openstack" / "latest" / "network_data.json"
        if candidate.is_file():
            return candidate
    return None


def read_network_data(path: str | os.PathLike) -> dict:
    """The parsed ``network_data.json`` at ``path``."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_NETWORK_DATA_BYTES + 1)
    except OSError as exc:
        raise NetworkDataError(f"cannot read {path}: {exc.strerror}") from None
    if len(data) > MAX_NETWORK_DATA_BYTES:
        raise NetworkDataError(f"{path} is larger than {MAX_NETWORK_DATA_BYTES} bytes")
    try:
        return json.loads(data)
    except ValueError:
        raise NetworkDataError(f"{path} is not JSON") from None


def write_network_config(directory: str | os.PathLike,
                         network_data: str | os.PathLike | None) -> list[str]:
    """Write the files for ``network_data`` (if given) and the DHCP fallback into
    ``directory``; returns the names written. NetworkDataError leaves only the fallback."""
    target = pathlib.Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    (target / FALLBACK_NAME).write_text(DHCP_FALLBACK, encoding="ascii")
    if network_data is None:
        return [FALLBACK_NAME]
    files = networkd_files(read_network_data(network_data))
    for name, content in files.items():
        (target / name).write_text(content, encoding="ascii")
    return [*files, FALLBACK_NAME]
