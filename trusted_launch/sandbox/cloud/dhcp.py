"""The dnsmasq processes neutron's DHCP agent leaves behind, found by the agent's files.

The agent (``neutron-dhcp-agent``, host ``tl-compute-high``) keeps one folder
per network it serves under ``<neutron state_path>/dhcp/<network id>/``,
with the pid file of that network's dnsmasq; dnsmasq runs in the namespace
``qdhcp-<network id>``.  dnsmasq detaches into its own session, so stopping
the agent leaves it running: :func:`stop_all` ends each dnsmasq this cloud's
agent started (by its pid file, only when that process is dnsmasq with this
folder on its command line) and removes its namespace.  Network ids are
UUIDs of this cloud's own neutron, so nothing here touches another cloud.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import subprocess
import time

STOP_TIMEOUT_S = 10.0


def namespace(network_id: str) -> str:
    return f"qdhcp-{network_id}"


def _cmdline(pid: int) -> list[str]:
    try:
        return pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().decode(
            errors="replace").split("\0")
    except OSError:
        return []


def dnsmasq_pid(dhcp_dir: pathlib.Path, network_id: str) -> int | None:
    """The pid of the dnsmasq serving ``network_id`` if it runs, else None."""
    folder = dhcp_dir / network_id
    try:
        pid = int((folder / "pid").read_text().strip())
    except (OSError, ValueError):
        return None
    argv = _cmdline(pid)
    if not argv or os.path.basename(argv[0]) != "dnsmasq" or \
            not any(str(folder) in arg for arg in argv):
        return None
    return pid


def served_networks(dhcp_dir: pathlib.Path) -> list[str]:
    """The ids of the networks the agent has a folder for."""
    if not dhcp_dir.is_dir():
        return []
    return sorted(entry.name for entry in dhcp_dir.iterdir() if entry.is_dir())


def stop_all(dhcp_dir: pathlib.Path) -> list[str]:
    """Stop every dnsmasq of ``dhcp_dir`` and remove its namespace; what was stopped."""
    stopped = []
    for network_id in served_networks(dhcp_dir):
        pid = dnsmasq_pid(dhcp_dir, network_id)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_TIMEOUT_S
            while time.monotonic() < deadline and dnsmasq_pid(dhcp_dir, network_id):
                time.sleep(0.2)
            if dnsmasq_pid(dhcp_dir, network_id):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            stopped.append(f"dnsmasq-{network_id}")
        if namespace(network_id) in subprocess.run(
                ["ip", "netns", "list"], capture_output=True, text=True,
                check=False).stdout.split():
            subprocess.run(["ip", "netns", "delete", namespace(network_id)],
                           capture_output=True, check=False)
    return stopped
