"""``trusted-launch host enroll``: enrol this compute host's TPM at a TTP (operator step).

Run once per host before nova-compute uses ``TrustedLibvirtDriver``: it
creates (or reuses) the persisted AK, proves to the TTP that the AK lives in
the TPM whose EK certificate the TTP trusts, and writes the AK certificate to
the file nova.conf's ``[trusted_launch] ak_certificate_file`` names.
"""

from __future__ import annotations

import argparse
import os
import pathlib

DEFAULT_TCTI = "device:/dev/tpmrm0"


def register(subparsers) -> None:
    host = subparsers.add_parser("host", help="compute host operations")
    actions = host.add_subparsers(dest="host_command", required=True)
    enroll = actions.add_parser(
        "enroll", help="enrol this host's TPM at a TTP and save the AK certificate")
    enroll.add_argument("--ttp", required=True, help="TTP base URL (https://...)")
    enroll.add_argument("--host", required=True,
                        help="host name to enrol (nova.conf [trusted_launch] host_name, "
                             "else the nova-compute host name)")
    enroll.add_argument("--ak-cert-out", required=True, type=pathlib.Path,
                        help="where to write the AK certificate (PEM)")
    enroll.add_argument("--tcti", default=DEFAULT_TCTI,
                        help=f"how to reach the TPM (default {DEFAULT_TCTI})")
    enroll.add_argument("--ttp-ca-file", help="CA bundle for the TTP's HTTPS certificate")
    enroll.add_argument("--timeout", type=float, default=30.0,
                        help="seconds to wait for each TTP answer")
    enroll.set_defaults(func=enroll_command)


def enroll_command(args: argparse.Namespace) -> int:
    from trusted_launch.cmd.cli import CommandError
    from trusted_launch.compute.enrollment import enroll_host
    from trusted_launch.compute.errors import LaunchRefused
    from trusted_launch.compute.ttp_client import TTPClient
    from trusted_launch.tpm import TPMDevice, TPMError

    if not args.ttp.startswith("https://"):
        raise CommandError(f"--ttp {args.ttp!r} is not an https:// URL")
    if args.ttp_ca_file and not os.path.isfile(args.ttp_ca_file):
        raise CommandError(f"--ttp-ca-file {args.ttp_ca_file}: no such file (give the CA "
                           "certificate that signed the TTP's HTTPS certificate)")
    ttp = TTPClient(args.ttp, ca_file=args.ttp_ca_file, timeout=args.timeout)
    try:
        with TPMDevice(args.tcti) as device:
            certificate = enroll_host(device, ttp, args.host)
    except LaunchRefused as exc:
        raise CommandError(f"enrollment refused ({exc.check}): {exc.reason}") from None
    except TPMError as exc:
        raise CommandError(f"TPM: {exc} (check --tcti: the TPM must be reachable there and "
                           "usable by this user)") from None
    _write_certificate(args.ak_cert_out, certificate)
    print(f"host {args.host} enrolled; AK certificate written to {args.ak_cert_out}")
    return 0


def _write_certificate(path: pathlib.Path, certificate: str) -> None:
    """Write atomically: a temporary file in the same directory, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with os.fdopen(fd, "w", encoding="ascii") as fileobj:
        fileobj.write(certificate)
    os.replace(temporary, path)
