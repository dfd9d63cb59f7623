"""The configuration files of the cloud's OpenStack services, as an operator writes them.

Each function returns ``{section: {option: value}}`` for one file; the
trusted-launch parts of nova.conf are added afterwards by ``trusted-launch
configure`` (the code the DevStack plugin runs).  Files hold passwords, so
they are written readable by the owner only.
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping

from trusted_launch.sandbox.cloud.layout import CLOUD_NAME, CloudPaths, CloudState
from trusted_launch.ttp.keystore import write_private_file

Sections = dict[str, dict[str, str]]
MYSQL = "mysql+pymysql://root@127.0.0.1:3306/{name}?charset=utf8mb4"
DB_PREFIX = f"{CLOUD_NAME}cloud_"
RABBIT_VHOST = f"{CLOUD_NAME}cloud"
RABBIT_USER = f"{CLOUD_NAME}cloud"
REGION = "RegionOne"
PHYSNET = "physnet1"


def database_url(name: str) -> str:
    return MYSQL.format(name=DB_PREFIX + name)


def write_ini(path: pathlib.Path, sections: Mapping[str, Mapping[str, str]]) -> None:
    lines = []
    for section, options in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {value}" for key, value in options.items()]
        lines.append("")
    write_private_file(path, "\n".join(lines).encode())


def transport_url(state: CloudState) -> str:
    """The cloud's RabbitMQ URL (it holds the password: config files only)."""
    return (f"rabbit://{RABBIT_USER}:{state.passwords['rabbit']}@127.0.0.1:5672/"
            f"{RABBIT_VHOST}")


def _service_auth(state: CloudState, user: str) -> dict[str, str]:
    """keystoneauth password options of the service user ``user``."""
    return {"auth_type": "password", "auth_url": state.url("keystone", "/v3"),
            "username": user, "password": state.passwords["service"],
            "project_name": "service", "user_domain_name": "Default",
            "project_domain_name": "Default", "region_name": REGION}


def _authtoken(state: CloudState, user: str) -> dict[str, str]:
    return {"www_authenticate_uri": state.url("keystone", "/v3"),
            "service_token_roles_required": "True", **_service_auth(state, user)}


def _privsep(paths: CloudPaths, config_files: list[pathlib.Path]) -> str:
    """A privsep helper command: the processes run as root here, and there is no sudo."""
    files = " ".join(f"--config-file {path}" for path in config_files)
    return f"{paths.bin('privsep-helper')} {files}"


def keystone(paths: CloudPaths, state: CloudState) -> Sections:
    return {
        "DEFAULT": {"debug": "False"},
        "database": {"connection": database_url("keystone")},
        "token": {"provider": "fernet"},
        "fernet_tokens": {"key_repository": str(paths.data / "keystone" / "fernet-keys")},
        "credential": {"key_repository": str(paths.data / "keystone" / "credential-keys")},
    }


def glance(paths: CloudPaths, state: CloudState) -> Sections:
    images = paths.data / "glance"
    return {
        "DEFAULT": {"enabled_backends": "fs:file", "bind_host": "127.0.0.1",
                    "bind_port": str(state.ports["glance"])},
        "glance_store": {"default_backend": "fs"},
        "fs": {"filesystem_store_datadir": str(images / "images")},
        "os_glance_staging_store": {"filesystem_store_datadir": str(images / "staging")},
        "os_glance_tasks_store": {"filesystem_store_datadir": str(images / "tasks")},
        "database": {"connection": database_url("glance")},
        "paste_deploy": {"flavor": "keystone"},
        "keystone_authtoken": _authtoken(state, "glance"),
        "oslo_concurrency": {"lock_path": str(images / "locks")},
    }


def placement(paths: CloudPaths, state: CloudState) -> Sections:
    return {
        "api": {"auth_strategy": "keystone"},
        "placement_database": {"connection": database_url("placement")},
        "keystone_authtoken": _authtoken(state, "placement"),
    }


# Pooled connections kept open per process (oslo.db keeps 5 by default); more open
# while busy and close after use.
SMALL_POOL = {"max_pool_size": "2", "max_overflow": "10"}


def nova(paths: CloudPaths, state: CloudState) -> Sections:
    """nova.conf of nova-api, nova-conductor and nova-scheduler."""
    conf = paths.etc / "nova" / "nova.conf"
    return {
        "DEFAULT": {"transport_url": transport_url(state), "my_ip": "127.0.0.1",
                    "state_path": str(paths.data / "nova"),
                    "enabled_apis": "osapi_compute"},
        "api": {"auth_strategy": "keystone"},
        "wsgi": {"api_paste_config": str(paths.etc / "nova" / "api-paste.ini")},
        "api_database": {"connection": database_url("nova_api"), **SMALL_POOL},
        "database": {"connection": database_url("nova_cell1"), **SMALL_POOL},
        "keystone_authtoken": _authtoken(state, "nova"),
        "service_user": {"send_service_user_token": "True", **_service_auth(state, "nova")},
        "placement": _service_auth(state, "placement"),
        "neutron": _service_auth(state, "neutron"),
        "glance": {"region_name": REGION},
        # One worker each and small pools: several clouds share the machine's MariaDB
        # (max_connections 151), and its default two workers each hold pools.
        "scheduler": {"discover_hosts_in_cells_interval": "5", "workers": "1"},
        "conductor": {"workers": "1"},
        "oslo_concurrency": {"lock_path": str(paths.data / "nova" / "locks")},
        # Versioned and legacy notifications on the cloud's RabbitMQ; nothing consumes
        # them, so tests/cloud reads their queues (no secret may be in one).
        "oslo_messaging_notifications": {"driver": "messagingv2"},
        "notifications": {"notification_format": "both"},
        "nova_sys_admin": {"helper_command": _privsep(paths, [conf])},
    }


def nova_compute(paths: CloudPaths, state: CloudState, host: str,
                 libvirt: Mapping[str, str]) -> Sections:
    """nova.conf of the nova-compute named ``host`` (state and instances of its own)."""
    sections = nova(paths, state)
    base = paths.data / host
    conf = paths.etc / "nova" / f"nova-compute-{host}.conf"
    sections["DEFAULT"].update({
        "host": host, "state_path": str(base), "instances_path": str(base / "instances"),
        "compute_driver": "libvirt.LibvirtDriver"})
    for section in ("api", "wsgi", "api_database", "database", "keystone_authtoken"):
        del sections[section]
    sections["libvirt"] = dict(libvirt)
    sections["compute"] = {"consecutive_build_service_disable_threshold": "0"}
    sections["vnc"] = {"enabled": "False"}
    sections["oslo_concurrency"] = {"lock_path": str(base / "locks")}
    sections["nova_sys_admin"] = {"helper_command": _privsep(paths, [conf])}
    # The driver's attestation notifications too (written before `trusted-launch configure`
    # adds the rest of [trusted_launch]).
    sections["trusted_launch"] = {"notifications_enabled": "True"}
    return sections


def ttp_rpc(state: CloudState) -> Sections:
    """trusted-launch-ttp-rpc's bus: read after ttp.conf (whose [rpc] names topic and URL)."""
    return {"DEFAULT": {"transport_url": transport_url(state)}}


def neutron(paths: CloudPaths, state: CloudState) -> Sections:
    conf = paths.etc / "neutron" / "neutron.conf"
    helper = _privsep(paths, [conf])
    return {
        "DEFAULT": {"core_plugin": "ml2", "service_plugins": "", "auth_strategy": "keystone",
                    "transport_url": transport_url(state),
                    "state_path": str(paths.data / "neutron"),
                    "api_paste_config": str(paths.venv / "etc" / "neutron" / "api-paste.ini"),
                    "notify_nova_on_port_status_changes": "True",
                    "notify_nova_on_port_data_changes": "True",
                    "rpc_workers": "1", "rpc_state_report_workers": "1"},
        "database": {"connection": database_url("neutron")},
        "keystone_authtoken": _authtoken(state, "neutron"),
        "nova": _service_auth(state, "nova"),
        "oslo_concurrency": {"lock_path": str(paths.data / "neutron" / "locks")},
        # Processes run as root: no root wrapper, privsep helpers run directly.
        "agent": {"root_helper": "env"},
        **{section: {"helper_command": helper} for section in (
            "privsep", "privsep_link", "privsep_namespace", "privsep_conntrack",
            "privsep_dhcp_release", "privsep_ovs_vsctl")},
    }


def ml2() -> Sections:
    return {
        "ml2": {"type_drivers": "flat", "tenant_network_types": "",
                "mechanism_drivers": "macvtap", "extension_drivers": "port_security"},
        "ml2_type_flat": {"flat_networks": PHYSNET},
    }


def dhcp_agent(paths: CloudPaths, host: str, interface: str) -> Sections:
    """dhcp_agent.ini: dnsmasq in a ``qdhcp-<network>`` namespace, its port a macvlan on
    ``interface`` (the guests' macvtap segment), reported under ``host``."""
    return {
        "DEFAULT": {"host": host,
                    "interface_driver": "trusted_launch.sandbox.cloud.dhcp_interface."
                                        "MacvlanInterfaceDriver",
                    "dhcp_driver": "neutron.agent.linux.dhcp.Dnsmasq",
                    "enable_isolated_metadata": "False",
                    "dnsmasq_base_log_dir": str(paths.log / "dnsmasq")},
        "macvtap": {"physical_interface_mappings": f"{PHYSNET}:{interface}"},
    }


def macvtap_agent(host: str, interface: str) -> Sections:
    return {
        "DEFAULT": {"host": host},
        "macvtap": {"physical_interface_mappings": f"{PHYSNET}:{interface}"},
        "securitygroup": {"firewall_driver": "noop"},
        "agent": {"polling_interval": "1"},
    }
