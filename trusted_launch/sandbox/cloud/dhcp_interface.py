"""A neutron interface driver putting the DHCP agent's port on the guests' macvtap segment.

The tenant network's guests are macvtap devices in bridge mode on the
provider interface (``<name>-veth0``, see :mod:`network`).  Neutron's own
interface drivers plug a DHCP port into Open vSwitch or a Linux bridge,
neither of which exists here.  This driver makes the port a macvlan in bridge
mode on that same interface, with the port's MAC address, and moves it into
the agent's ``qdhcp-<network>`` namespace: macvlan and macvtap devices in
bridge mode on one lower device switch frames between each other and out of
it, so dnsmasq there hears the guests' DHCP requests and answers them.

The interface comes from the macvtap agent's own option, ``[macvtap]
physical_interface_mappings``, which must name exactly one interface (the
DHCP agent is not told a network's physical network when it plugs a port).
"""

from __future__ import annotations

import os

from neutron.agent.linux import interface, ip_lib
from neutron.conf.plugins.ml2.drivers import macvtap as macvtap_conf
from neutron.privileged.agent.linux import ip_lib as privileged
from neutron_lib.utils import helpers
from oslo_config import cfg
from oslo_log import log as logging

LOG = logging.getLogger(__name__)
# The macvlan is made under this name in the root namespace, then renamed in its own.
STAGING_PREFIX = "tlm"


class MacvlanInterfaceError(RuntimeError):
    """The driver's configuration does not name one lower interface that exists."""


def lower_interface(conf: cfg.ConfigOpts) -> str:
    """The one interface of ``[macvtap] physical_interface_mappings``."""
    mappings = helpers.parse_mappings(conf.macvtap.physical_interface_mappings)
    interfaces = sorted(set(mappings.values()))
    if len(interfaces) != 1:
        raise MacvlanInterfaceError(
            "[macvtap] physical_interface_mappings must map to exactly one interface for "
            f"the macvlan interface driver, not {interfaces or 'none'}")
    return interfaces[0]


class MacvlanInterfaceDriver(interface.LinuxInterfaceDriver):
    """Plug a port as a macvlan (bridge mode) on the macvtap agent's interface."""

    def __init__(self, conf: cfg.ConfigOpts, **kwargs) -> None:
        super().__init__(conf, **kwargs)
        macvtap_conf.register_macvtap_opts(conf)
        self.lower = lower_interface(conf)
        # Not ip_lib.device_exists: no privileged call before oslo.service forks the worker.
        if not os.path.exists(f"/sys/class/net/{self.lower}"):
            raise MacvlanInterfaceError(f"the macvlan interface driver's lower interface "
                                        f"{self.lower} does not exist")

    def plug_new(self, network_id, port_id, device_name, mac_address,
                 bridge=None, namespace=None, prefix=None, mtu=None) -> None:
        staging = (STAGING_PREFIX + port_id)[:self.DEV_NAME_LEN]
        privileged.create_interface(staging, None, "macvlan", physical_interface=self.lower,
                                    macvlan_mode="bridge", address=mac_address)
        device = ip_lib.IPDevice(staging)
        try:
            if namespace:
                ip_lib.IPWrapper().ensure_namespace(namespace)
                device.link.set_netns(namespace)
            device.link.set_name(device_name)
            if mtu:
                device.link.set_mtu(mtu)
            device.link.set_up()
        except Exception:
            LOG.exception("Plugging %s as a macvlan on %s failed", device_name, self.lower)
            for name, where in ((staging, None), (device_name, namespace)):
                if ip_lib.device_exists(name, namespace=where):
                    ip_lib.IPDevice(name, namespace=where).link.delete()
            raise
        LOG.info("Plugged port %s as macvlan %s on %s in namespace %s", port_id, device_name,
                 self.lower, namespace)

    def unplug(self, device_name, bridge=None, namespace=None, prefix=None) -> None:
        if ip_lib.device_exists(device_name, namespace=namespace):
            ip_lib.IPDevice(device_name, namespace=namespace).link.delete()
            LOG.info("Unplugged macvlan %s", device_name)

    def set_mtu(self, device_name, mtu, namespace=None, prefix=None) -> None:
        ip_lib.IPDevice(device_name, namespace=namespace).link.set_mtu(mtu)
