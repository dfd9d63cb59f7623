"""What trusted launch adds to nova.conf (scheduler, compute) and writes into ttp.conf.

Each function edits one file in place (see :mod:`trusted_launch.deploy.inifile`)
and is idempotent: running it twice leaves the same file.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from dataclasses import dataclass

from trusted_launch.deploy.inifile import IniFile

FILTER_NAME = "SecurityProfileFilter"
FILTER_PATH = "trusted_launch.scheduler.security_profile_filter.SecurityProfileFilter"
NOVA_DEFAULT_FILTERS = "nova.scheduler.filters.all_filters"
# Nova's own default of [filter_scheduler] enabled_filters (nova 34): kept when
# the operator's file leaves the option unset, so adding ours drops none of them.
NOVA_DEFAULT_ENABLED_FILTERS = ("ComputeFilter", "ComputeCapabilitiesFilter",
                                "ImagePropertiesFilter", "ServerGroupAntiAffinityFilter",
                                "ServerGroupAffinityFilter")
COMPUTE_DRIVER = "trusted_launch.driver.TrustedLibvirtDriver"
TTP_TRANSPORTS = ("https", "rpc")


@dataclass(frozen=True)
class TrustedLaunchSettings:
    """The [trusted_launch] values every Nova service of a deployment shares."""

    profiles: Sequence[str]
    ttp_url: str
    ttp_ca_file: pathlib.Path


@dataclass(frozen=True)
class ComputeHostSettings:
    """What one compute host adds: how to reach its TPM and what it is built to meet."""

    tcti: str
    event_log: pathlib.Path
    host_profile: str
    ak_certificate_file: pathlib.Path
    ttp_auth_token_file: pathlib.Path | None = None
    ttp_transport: str = "https"
    ttp_rpc_topic: str | None = None
    ttp_receipt_key_file: pathlib.Path | None = None


def _set_shared(conf: IniFile, settings: TrustedLaunchSettings) -> None:
    if not settings.ttp_url.startswith("https://"):
        raise ValueError(f"TTP URL {settings.ttp_url!r} is not an https:// URL")
    conf.set("trusted_launch", "security_profiles", ",".join(settings.profiles))
    conf.set("trusted_launch", "allowed_ttp_urls", settings.ttp_url)
    conf.set("trusted_launch", "ttp_ca_file", str(settings.ttp_ca_file))


def configure_nova_scheduler(path: pathlib.Path, settings: TrustedLaunchSettings) -> None:
    """Enable SecurityProfileFilter after the filters already enabled, keep Nova's own."""
    conf = IniFile(path)
    current = conf.get("filter_scheduler", "enabled_filters")
    enabled = (list(NOVA_DEFAULT_ENABLED_FILTERS) if current is None else
               [name.strip() for name in current.split(",") if name.strip()])
    if FILTER_NAME not in enabled:
        enabled.append(FILTER_NAME)
    conf.set("filter_scheduler", "enabled_filters", ",".join(enabled))
    if not conf.get_all("filter_scheduler", "available_filters"):
        conf.add("filter_scheduler", "available_filters", NOVA_DEFAULT_FILTERS)
    conf.add("filter_scheduler", "available_filters", FILTER_PATH)
    _set_shared(conf, settings)
    conf.write()


def configure_nova_compute(path: pathlib.Path, settings: TrustedLaunchSettings,
                           host: ComputeHostSettings) -> None:
    """Run TrustedLibvirtDriver on this host's TPM and reported security profile."""
    if host.host_profile not in settings.profiles:
        raise ValueError(f"host profile {host.host_profile!r} is not one of "
                         f"{','.join(settings.profiles)}")
    conf = IniFile(path)
    conf.set("DEFAULT", "compute_driver", COMPUTE_DRIVER)
    conf.set("DEFAULT", "force_config_drive", "False")
    # Encrypted images stay qcow2 ciphertext in _base (never converted to raw).
    conf.set("DEFAULT", "force_raw_images", "False")
    _set_shared(conf, settings)
    conf.set("trusted_launch", "tcti", host.tcti)
    conf.set("trusted_launch", "event_log_path", str(host.event_log))
    conf.set("trusted_launch", "host_security_profile", host.host_profile)
    conf.set("trusted_launch", "ak_certificate_file", str(host.ak_certificate_file))
    if host.ttp_auth_token_file is not None:
        conf.set("trusted_launch", "ttp_auth_token_file", str(host.ttp_auth_token_file))
    _set_transport(conf, host)
    conf.write()


def _set_transport(conf: IniFile, host: ComputeHostSettings) -> None:
    """[trusted_launch] ttp_transport and what RPC needs (the TTP's receipt key)."""
    if host.ttp_transport not in TTP_TRANSPORTS:
        raise ValueError(f"TTP transport {host.ttp_transport!r} is not one of "
                         f"{','.join(TTP_TRANSPORTS)}")
    if host.ttp_transport == "rpc" and host.ttp_receipt_key_file is None:
        raise ValueError("TTP transport rpc needs the TTP's receipt key file "
                         "(--ttp-receipt-key-file): over the bus only the TTP's signed "
                         "receipt authenticates its answer")
    conf.set("trusted_launch", "ttp_transport", host.ttp_transport)
    if host.ttp_rpc_topic is not None:
        conf.set("trusted_launch", "ttp_rpc_topic", host.ttp_rpc_topic)
    if host.ttp_receipt_key_file is not None:
        conf.set("trusted_launch", "ttp_receipt_key_file", str(host.ttp_receipt_key_file))


@dataclass(frozen=True)
class TTPSettings:
    """Where the TTP listens, its TLS pair, database, key directory and trust anchors."""

    bind_host: str
    bind_port: int
    cert_file: pathlib.Path
    key_file: pathlib.Path
    database_url: str
    data_dir: pathlib.Path
    ek_ca_files: Sequence[pathlib.Path]
    profile_dir: pathlib.Path
    rpc_ttp_url: str | None = None
    rpc_topic: str | None = None


def configure_ttp(path: pathlib.Path, settings: TTPSettings) -> None:
    """Write the TTP's [api], [database], [key_store], [enrollment], [attestation]."""
    conf = IniFile(path)
    conf.set("api", "bind_host", settings.bind_host)
    conf.set("api", "bind_port", str(settings.bind_port))
    conf.set("api", "cert_file", str(settings.cert_file))
    conf.set("api", "key_file", str(settings.key_file))
    conf.set("database", "connection", settings.database_url)
    conf.set("key_store", "key_dir", str(settings.data_dir / "keys"))
    conf.set("key_store", "attestation_ca_cert", str(settings.data_dir / "ak-ca.pem"))
    conf.set("key_store", "attestation_ca_key", str(settings.data_dir / "ak-ca.key"))
    conf.set("enrollment", "ek_ca_files", ",".join(str(p) for p in settings.ek_ca_files))
    conf.set("attestation", "profile_dir", str(settings.profile_dir))
    if settings.rpc_ttp_url is not None:
        # trusted-launch-ttp-rpc; its [DEFAULT] transport_url (a secret) the installer
        # writes itself, never through a command line.
        if not settings.rpc_ttp_url.startswith("https://"):
            raise ValueError(f"TTP URL {settings.rpc_ttp_url!r} is not an https:// URL")
        conf.set("rpc", "ttp_url", settings.rpc_ttp_url)
    if settings.rpc_topic is not None:
        conf.set("rpc", "topic", settings.rpc_topic)
    conf.write()


def fetch_receipt_key(ttp_url: str, ca_file: pathlib.Path, path: pathlib.Path) -> str:
    """Write the TTP's receipt public key (GET /v1/keys over verified HTTPS) to ``path``.

    The file is written 0600 (nova-compute reads it as its owner); the key id is
    returned. ValueError when the TTP publishes no usable receipt key.
    """
    from trusted_launch.client.errors import ReceiptUnavailable
    from trusted_launch.client.receipts import fetch_receipt_keys
    from trusted_launch.crypto.receipt import public_key_pem
    from trusted_launch.ttp.keystore import write_private_file

    try:
        keys = fetch_receipt_keys(ttp_url, ca_file=str(ca_file))
    except ReceiptUnavailable as exc:
        raise ValueError(f"receipt key of {ttp_url}: {exc}") from None
    key_id, key = next(iter(keys.items()))  # the TTP lists its current key first
    write_private_file(path, public_key_pem(key).encode("ascii"))
    return key_id
