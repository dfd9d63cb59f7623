"""A Tempest workspace and tempest.conf for the cloud of tools/run-cloud.sh.

``python -m trusted_launch.sandbox.cloud.tempest_conf`` (what
tools/run-tempest.sh and tests/cloud/test_tempest.py run) makes
``.cloud/tempest/`` with ``tempest init`` once, then writes its
``etc/tempest.conf`` (mode 0600: it holds the admin password) for the
running cloud: keystone and the admin account (Tempest makes a project per
test class), the images and flavors the compute API tests boot, the flat
shared network, the compute features a two-compute TCG cloud on one machine
can pass, and the plugin's ``[trusted_launch]`` group (TTP, CA, the guest
image with the agent, the tenant namespace). See doc/tempest.md.
"""

from __future__ import annotations

import argparse
import pathlib
import subprocess
import sys
from collections.abc import Mapping

from trusted_launch.sandbox.cloud import bringup, configs, network
from trusted_launch.sandbox.cloud.layout import REPO, CloudPaths
from trusted_launch.sandbox.cloud.scenarios import GUEST_IMAGE_NAME, TARGET_FLAVOR, cloud_target

TIMEOUT_S = 1200  # TCG guests on a shared 2-core machine
ALT_FLAVOR = "tl.tiny2"  # a second small flavor for tests that want flavor_ref_alt


def workspace(paths: CloudPaths) -> pathlib.Path:
    return paths.root / "tempest"


def compute_features() -> dict[str, str]:
    """[compute-feature-enabled]: what this cloud does (doc/tempest.md says why not the rest)."""
    return {
        # Two computes on one machine with their own instances_path: Nova takes the
        # instance directory for shared storage and never copies disks (scenarios.py).
        "resize": "false", "cold_migration": "false", "live_migration": "false",
        "block_migration_for_live_migration": "false", "shelve": "false",
        "shelve_migrate": "false", "snapshot": "false",
        # No VNC/SPICE/serial proxies, no metadata agent, no injected files, no Cinder.
        "vnc_console": "false", "spice_console": "false", "serial_console": "false",
        "rdp_console": "false", "metadata_service": "false", "personality": "false",
        "attach_encrypted_volume": "false", "volume_multiattach": "false",
        "volume_backed_live_migration": "false", "change_password": "false",
        "rescue": "false", "interface_attach": "false", "hostname_fqdn_sanitization": "false",
        # What it does: a config drive, console logs, pause/suspend, keypairs.
        "config_drive": "true", "console_output": "true", "pause": "true",
        "suspend": "true", "disk_config": "true", "scheduler_enabled_filters": "all",
    }


def sections(paths: CloudPaths) -> dict[str, dict[str, str]]:
    """tempest.conf for the running cloud (uploads the guest image when Glance lacks it)."""
    cloud = bringup.Cloud(paths)
    conn = cloud.connection()
    target = cloud_target(paths.root, paths.venv)
    tiny = conn.image.find_image(bringup.TINY_IMAGE, ignore_missing=False)
    guest = conn.image.find_image(GUEST_IMAGE_NAME, ignore_missing=False)
    flavors = {name: conn.compute.find_flavor(name, ignore_missing=False).id
               for name in bringup.FLAVORS}
    alt = conn.compute.find_flavor(ALT_FLAVOR) or conn.compute.create_flavor(
        name=ALT_FLAVOR, vcpus=1, ram=192, disk=1)
    state, log_dir = cloud.state, workspace(paths) / "logs"
    return {
        "DEFAULT": {"log_dir": str(log_dir), "log_file": "tempest.log"},
        "oslo_concurrency": {"lock_path": str(workspace(paths) / "lock")},
        "auth": {"admin_username": "admin", "admin_password": state.passwords["admin"],
                 "admin_project_name": "admin", "admin_domain_name": "Default",
                 "use_dynamic_credentials": "true", "create_isolated_networks": "false",
                 "tempest_roles": "member"},
        "identity": {"uri_v3": state.url("keystone", "/v3"), "auth_version": "v3",
                     "region": configs.REGION, "v3_endpoint_type": "public"},
        "identity-feature-enabled": {"api_v2": "false"},
        "service_available": {"nova": "true", "glance": "true", "neutron": "true",
                              "cinder": "false", "swift": "false", "heat": "false",
                              "trusted_launch": "true"},
        "compute": {"image_ref": tiny.id, "image_ref_alt": tiny.id,
                    "flavor_ref": flavors["tl.tiny"], "flavor_ref_alt": alt.id,
                    "fixed_network_name": bringup.NETWORK, "region": configs.REGION,
                    "build_timeout": str(TIMEOUT_S), "build_interval": "2",
                    "ready_wait": "0", "min_compute_nodes": "2"},
        "compute-feature-enabled": compute_features(),
        "image": {"region": configs.REGION, "build_timeout": str(TIMEOUT_S)},
        "image-feature-enabled": {"api_v1": "false", "api_v2": "true"},
        "network": {"region": configs.REGION, "shared_physical_network": "true",
                    "project_networks_reachable": "false", "build_timeout": str(TIMEOUT_S)},
        "network-feature-enabled": {"floating_ips": "false", "ipv6": "false"},
        "validation": {"run_validation": "false"},
        "volume": {"build_timeout": str(TIMEOUT_S)},
        "trusted_launch": {
            "ttp_url": target.ttp_url, "ca_file": target.ttp_ca_file,
            "profiles": ",".join(bringup.PROFILES), "profile": "high",
            "image_ref": guest.id, "image_file": target.image_file,
            "flavor_ref": flavors[TARGET_FLAVOR], "tenant_namespace": network.NAMESPACE,
            "answer_timeout": str(TIMEOUT_S)},
    }


def write_workspace(paths: CloudPaths) -> pathlib.Path:
    """Make the workspace once (``tempest init``); (re)write its tempest.conf; its path."""
    directory = workspace(paths)
    if not (directory / ".stestr.conf").exists():
        directory.parent.mkdir(parents=True, exist_ok=True)
        init = subprocess.run([paths.bin("tempest"), "init", "--workspace-path",
                               str(paths.root / "tempest-workspaces.yaml"), str(directory)],
                              check=False, capture_output=True, text=True, timeout=300)
        if init.returncode != 0:  # e.g. the directory exists and is not a workspace
            raise RuntimeError(f"tempest init {directory} failed (exit {init.returncode}): "
                               f"{(init.stderr or init.stdout).strip()[-2000:]}")
    write_conf(directory / "etc" / "tempest.conf", sections(paths))
    return directory


def write_conf(path: pathlib.Path, content: Mapping[str, Mapping[str, str]]) -> None:
    configs.write_ini(path, content)  # 0600: the admin password is in [auth]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=pathlib.Path, default=REPO / ".cloud")
    parser.add_argument("--venv", type=pathlib.Path, default=pathlib.Path(sys.prefix))
    args = parser.parse_args(argv)
    print(write_workspace(CloudPaths(args.root, args.venv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
