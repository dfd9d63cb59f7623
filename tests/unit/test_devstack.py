"""The DevStack plugin parses and configures what the README says it does."""

from __future__ import annotations

import pathlib
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[2]
PLUGIN = ROOT / "devstack" / "plugin.sh"


def test_plugin_and_settings_parse():
    for script in (PLUGIN, ROOT / "devstack" / "settings"):
        subprocess.run(["bash", "-n", str(script)], check=True)


def test_plugin_sets_filter_driver_and_enrolls():
    text = PLUGIN.read_text()
    for needle in ("SecurityProfileFilter", "trusted_launch.driver.TrustedLibvirtDriver",
                   "trusted-launch host enroll", "openstack aggregate create",
                   "trusted-launch-ttp-manage --config-file", "socket --tpm2 --tpmstate"):
        assert needle in text, needle
