"""The OpenStackClient plugin module (``openstack.cli.extension = trusted_launch``).

OSC imports this module for every ``openstack`` invocation, so it stays
light: the commands are loaded from ``openstack.trusted_launch.v1`` only when
used. The commands talk to the TTP, the guest agent and the cloud's own
Glance/Nova/Neutron clients; there is no trusted-launch cloud endpoint.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from osc_lib import utils

API_NAME = "trusted_launch"
API_VERSION_OPTION = "os_trusted_launch_api_version"
DEFAULT_API_VERSION = "1"
API_VERSIONS = ("1",)


@dataclass(frozen=True)
class TrustedLaunchClient:
    """What ``client_manager.trusted_launch`` holds: the selected plugin API version."""

    api_version: str


def make_client(instance) -> TrustedLaunchClient:
    """The plugin's client object (no endpoint: commands use the TTP URL they are given)."""
    versions = getattr(instance, "_api_version", None) or {}
    return TrustedLaunchClient(versions.get(API_NAME, DEFAULT_API_VERSION))


def build_option_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--os-trusted-launch-api-version`` to the global options."""
    parser.add_argument(
        "--os-trusted-launch-api-version", metavar="<trusted-launch-api-version>",
        default=utils.env("OS_TRUSTED_LAUNCH_API_VERSION"),
        help=f"trusted-launch command API version, default={DEFAULT_API_VERSION} "
             "(Env: OS_TRUSTED_LAUNCH_API_VERSION)")
    return parser
