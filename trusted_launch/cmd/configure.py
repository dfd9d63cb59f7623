"""``trusted-launch configure nova-scheduler|nova-compute|ttp``: write a deployment's config.

Installers (the DevStack plugin, ``tools/run-cloud.sh``) call these instead of
editing the files themselves, so every installer configures Nova and the TTP
the same way (see :mod:`trusted_launch.deploy.nova_ttp`).
"""

from __future__ import annotations

import argparse
import pathlib


def _comma_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _add_shared(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config-file", required=True, type=pathlib.Path,
                        help="nova.conf to edit in place")
    parser.add_argument("--profiles", required=True, type=_comma_list,
                        help="security profile names, weakest first (low,medium,high)")
    parser.add_argument("--ttp-url", required=True, help="the TTP's https:// base URL")
    parser.add_argument("--ttp-ca-file", required=True, type=pathlib.Path,
                        help="CA bundle of the TTP's HTTPS certificate")


def register(subparsers) -> None:
    configure = subparsers.add_parser(
        "configure", help="write trusted launch's part of nova.conf or ttp.conf")
    targets = configure.add_subparsers(dest="configure_target", required=True)
    scheduler = targets.add_parser("nova-scheduler",
                                   help="enable SecurityProfileFilter in nova.conf")
    _add_shared(scheduler)
    scheduler.set_defaults(func=scheduler_command)
    compute = targets.add_parser("nova-compute",
                                 help="run TrustedLibvirtDriver (nova-compute's nova.conf)")
    _add_shared(compute)
    compute.add_argument("--tcti", required=True, help="how to reach this host's TPM")
    compute.add_argument("--event-log", required=True, type=pathlib.Path,
                         help="this host's firmware event log")
    compute.add_argument("--host-profile", required=True,
                         help="the security profile this host is built to meet")
    compute.add_argument("--ak-certificate-file", required=True, type=pathlib.Path,
                         help="where `trusted-launch host enroll` wrote the AK certificate")
    compute.add_argument("--ttp-auth-token-file", type=pathlib.Path,
                         help="this host's TTP API token (role host), made by "
                              "`trusted-launch-ttp-manage token create --role host`")
    compute.add_argument("--ttp-transport", choices=("https", "rpc"), default="https",
                         help="how this host sends its requests to the TTP (rpc: "
                              "oslo.messaging on [DEFAULT] transport_url, served by "
                              "trusted-launch-ttp-rpc; needs --ttp-receipt-key-file)")
    compute.add_argument("--ttp-rpc-topic",
                         help="the TTP's RPC topic (its [rpc] topic; default "
                              "trusted_launch_ttp)")
    compute.add_argument("--ttp-receipt-key-file", type=pathlib.Path,
                         help="the TTP's receipt public key (PEM, `trusted-launch configure "
                              "ttp-receipt-key` fetches it): releases are checked against "
                              "the TTP's signed receipt, and guests get it on the config "
                              "drive to check their receipt")
    compute.set_defaults(func=compute_command)
    receipt_key = targets.add_parser(
        "ttp-receipt-key", help="fetch the TTP's receipt public key (GET /v1/keys over "
                                "verified HTTPS) into a file for nova-compute")
    receipt_key.add_argument("--ttp-url", required=True, help="the TTP's https:// base URL")
    receipt_key.add_argument("--ttp-ca-file", required=True, type=pathlib.Path,
                             help="CA bundle of the TTP's HTTPS certificate")
    receipt_key.add_argument("--out", required=True, type=pathlib.Path,
                             help="PEM file to write (mode 0600)")
    receipt_key.set_defaults(func=receipt_key_command)
    ttp = targets.add_parser("ttp", help="write ttp.conf")
    ttp.add_argument("--config-file", required=True, type=pathlib.Path)
    ttp.add_argument("--bind-host", required=True)
    ttp.add_argument("--bind-port", required=True, type=int)
    ttp.add_argument("--cert-file", required=True, type=pathlib.Path)
    ttp.add_argument("--key-file", required=True, type=pathlib.Path)
    ttp.add_argument("--database-url", required=True,
                     help="SQLAlchemy URL (written to the file, never printed)")
    ttp.add_argument("--data-dir", required=True, type=pathlib.Path,
                     help="directory of the TTP's keys and attestation CA")
    ttp.add_argument("--ek-ca-files", required=True,
                     type=lambda text: [pathlib.Path(p) for p in _comma_list(text)])
    ttp.add_argument("--profile-dir", required=True, type=pathlib.Path)
    ttp.add_argument("--rpc-ttp-url",
                     help="[rpc] ttp_url for trusted-launch-ttp-rpc: this TTP's https:// URL "
                          "as hosts allow it (its [DEFAULT] transport_url, a secret, is not "
                          "taken on a command line)")
    ttp.add_argument("--rpc-topic", help="[rpc] topic (default trusted_launch_ttp)")
    ttp.set_defaults(func=ttp_command)


def _shared(args: argparse.Namespace):
    from trusted_launch.deploy.nova_ttp import TrustedLaunchSettings

    return TrustedLaunchSettings(args.profiles, args.ttp_url, args.ttp_ca_file)


def scheduler_command(args: argparse.Namespace) -> int:
    from trusted_launch.deploy.nova_ttp import configure_nova_scheduler

    configure_nova_scheduler(args.config_file, _shared(args))
    return 0


def compute_command(args: argparse.Namespace) -> int:
    from trusted_launch.deploy.nova_ttp import ComputeHostSettings, configure_nova_compute

    host = ComputeHostSettings(args.tcti, args.event_log, args.host_profile,
                               args.ak_certificate_file, args.ttp_auth_token_file,
                               args.ttp_transport, args.ttp_rpc_topic,
                               args.ttp_receipt_key_file)
    configure_nova_compute(args.config_file, _shared(args), host)
    return 0


def ttp_command(args: argparse.Namespace) -> int:
    from trusted_launch.deploy.nova_ttp import TTPSettings, configure_ttp

    configure_ttp(args.config_file, TTPSettings(
        args.bind_host, args.bind_port, args.cert_file, args.key_file, args.database_url,
        args.data_dir, args.ek_ca_files, args.profile_dir, args.rpc_ttp_url, args.rpc_topic))
    return 0


def receipt_key_command(args: argparse.Namespace) -> int:
    from trusted_launch.deploy.nova_ttp import fetch_receipt_key

    key_id = fetch_receipt_key(args.ttp_url, args.ttp_ca_file, args.out)
    print(f"receipt key {key_id} of {args.ttp_url} written to {args.out}")
    return 0
