"""The tenant network's wire: a veth pair from the root namespace into ``tl-tenant``.

(Names shown for the default ``TL_CLOUD_NAME=tl``.)

``tl-veth0`` (root namespace, no address) is the provider network's
physical interface: neutron's macvtap agent puts guests on it (macvtap,
bridge mode).  Its peer ``tl-veth1`` sits in the namespace ``tl-tenant`` with
198.18.0.1/24, where the tenant's client runs (``ip netns exec tl-tenant ...``).
Nothing routes: the namespace has no default route and no forwarding, the root
side has no address.
"""

from __future__ import annotations

import subprocess

from trusted_launch.sandbox.cloud.layout import CLOUD_NAME

NAMESPACE = f"{CLOUD_NAME}-tenant"
HOST_INTERFACE = f"{CLOUD_NAME}-veth0"
TENANT_INTERFACE = f"{CLOUD_NAME}-veth1"
TENANT_CIDR = "198.18.0.0/24"
TENANT_ADDRESS = "198.18.0.1/24"
GATEWAY = "198.18.0.1"
ALLOCATION_POOL = ("198.18.0.10", "198.18.0.250")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def namespace_exists() -> bool:
    return NAMESPACE in _ip("netns", "list").stdout.split()


def create() -> bool:
    """Make the namespace and veth pair unless present; True when made now."""
    made = False
    if not namespace_exists():
        _ip("netns", "add", NAMESPACE)
        made = True
    if _ip("link", "show", HOST_INTERFACE, check=False).returncode != 0:
        _ip("link", "add", HOST_INTERFACE, "type", "veth", "peer", "name", TENANT_INTERFACE,
            "netns", NAMESPACE)
        made = True
    _ip("link", "set", HOST_INTERFACE, "up")
    inside = ("-n", NAMESPACE)
    if TENANT_ADDRESS not in _ip(*inside, "addr", "show", TENANT_INTERFACE).stdout:
        _ip(*inside, "addr", "add", TENANT_ADDRESS, "dev", TENANT_INTERFACE)
    _ip(*inside, "link", "set", TENANT_INTERFACE, "up")
    _ip(*inside, "link", "set", "lo", "up")
    return made


def delete() -> None:
    """Remove the namespace (which removes the veth pair with it) and a leftover host end."""
    if namespace_exists():
        _ip("netns", "delete", NAMESPACE)
    if _ip("link", "show", HOST_INTERFACE, check=False).returncode == 0:
        _ip("link", "delete", HOST_INTERFACE, check=False)
