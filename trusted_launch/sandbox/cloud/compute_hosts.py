"""The two compute hosts: a swtpm each, booted from its own firmware log, enrolled at the TTP.

``tl-compute-high`` replays a Secure Boot log that meets profile high;
``tl-compute-low`` a log without Secure Boot that meets only low.  Each runs
its own libvirtd (see :mod:`trusted_launch.sandbox.cloud.hypervisor`) and a
nova-compute with TrustedLibvirtDriver inside that libvirtd's namespace.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass

from trusted_launch.sandbox.cloud.layout import REPO
from trusted_launch.sandbox.cloud.processes import Service
from trusted_launch.sandbox.swtpm import LocalCA, manufacture

EVENTLOG_DIR = REPO / "tests" / "data" / "eventlogs"


@dataclass(frozen=True)
class ComputeHost:
    """One compute host of the cloud."""

    name: str
    profile: str
    event_log: pathlib.Path
    swtpm_port: int

    @property
    def tcti(self) -> str:
        return f"swtpm:host=127.0.0.1,port={self.swtpm_port}"


COMPUTE_HOSTS = (
    ("tl-compute-high", "high", "secureboot_binary_bios_measurements"),
    ("tl-compute-low", "low", "coreos_36_shielded_vm_no_secure_boot_eventlog"),
)


def compute_hosts(swtpm_ports: dict[str, int]) -> list[ComputeHost]:
    return [ComputeHost(name, profile, EVENTLOG_DIR / log, swtpm_ports[name])
            for name, profile, log in COMPUTE_HOSTS]


def manufacture_once(state_dir: pathlib.Path, ca: LocalCA) -> None:
    """A TPM state with its own EK certificate from ``ca``, made on the first run only."""
    if not (state_dir / "tpm2-00.permall").exists():
        manufacture(state_dir, ca)


def swtpm_service(host: ComputeHost, state_dir: pathlib.Path) -> Service:
    """A swtpm on the state manufactured for this host."""
    return Service(f"swtpm-{host.name}", [
        "swtpm", "socket", "--tpm2", "--tpmstate", f"dir={state_dir}",
        "--server", f"type=tcp,port={host.swtpm_port},bindaddr=127.0.0.1",
        "--ctrl", f"type=tcp,port={host.swtpm_port + 1},bindaddr=127.0.0.1",
        "--flags", "not-need-init,startup-clear"])
