"""``trusted-launch-guest``: the in-VM agent that answers the tenant's challenge."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from trusted_launch.guest.agent import ChallengeServer, status_document
from trusted_launch.guest.identity import (
    DEFAULT_SSH_HOST_KEY,
    GuestIdentity,
    GuestSetupError,
    default_meta_data,
    default_nonce_file,
    load_identity,
    server_id_from_meta_data,
    ttp_url_from_meta_data,
)
from trusted_launch.guest.mutual import MutualAuthenticator
from trusted_launch.guest.network_config import (
    NetworkDataError,
    configure_network,
    default_network_data,
)
from trusted_launch.guest.receipt_status import (
    RECEIPT_FILE,
    RECEIPT_KEY_FILE,
    ReceiptStatus,
    config_drive_file,
    format_time,
    load_receipt_status,
    motd_text,
    write_motd,
)

DEFAULT_LISTEN = "0.0.0.0:8950"
NEEDS_DHCP = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trusted-launch-guest",
        description="Prove to the tenant that this VM was launched with its token.")
    parser.add_argument("--nonce-file", help="launch nonce file (default: "
                        "trusted_launch/nonce on the config drive, or /run/trusted-launch/nonce)")
    ident = parser.add_mutually_exclusive_group()
    ident.add_argument("--server-id", help="this server's Nova id")
    ident.add_argument("--meta-data", help="config drive meta_data.json (default: found on the "
                       "mounted config drive)")
    parser.add_argument("--ssh-host-key", default=str(DEFAULT_SSH_HOST_KEY),
                        help="SSH host public key (.pub) to authenticate")
    parser.add_argument("--listen", default=DEFAULT_LISTEN, help="HOST:PORT to serve on")
    parser.add_argument("--status", action="store_true",
                        help="print the agent's status (no secret) and exit")
    parser.add_argument("--receipt-file", help=f"the TTP's launch receipt (default: "
                        f"trusted_launch/{RECEIPT_FILE} on the config drive)")
    parser.add_argument("--receipt-key", help="TTP receipt public key (PEM) pinned in the "
                        f"image (default: trusted_launch/{RECEIPT_KEY_FILE} on the config "
                        "drive, which the host supplies)")
    parser.add_argument("--motd", metavar="PATH",
                        help="write a one-line trust status message to PATH (e.g. /etc/motd)")
    parser.add_argument("--authorized-keys", metavar="PATH",
                        help="authorized_keys file that mutually authenticated tenants may "
                        "add SSH keys to (default: disabled)")
    parser.add_argument("--configure-network", metavar="DIR",
                        help="set the static addresses, routes and MTUs of the config "
                        "drive's network_data.json now (iproute2), write systemd-networkd "
                        "files for it and a DHCP fallback into DIR, and exit: 0 when no "
                        f"interface needs DHCP, {NEEDS_DHCP} when networkd should run")
    return parser


def identity_from_args(args: argparse.Namespace) -> GuestIdentity:
    server_id = args.server_id or server_id_from_meta_data(args.meta_data or default_meta_data())
    return load_identity(nonce_file=args.nonce_file or default_nonce_file(),
                         server_id=server_id, ssh_host_key=args.ssh_host_key)


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"--listen {text!r} must be HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)  # noqa: S104


def receipt_status_from_args(args: argparse.Namespace, identity: GuestIdentity
                             ) -> ReceiptStatus:
    receipt = args.receipt_file or config_drive_file(RECEIPT_FILE)
    if args.receipt_key:
        return load_receipt_status(receipt, args.receipt_key, identity.nonce,
                                   key_source="pinned")
    return load_receipt_status(receipt, config_drive_file(RECEIPT_KEY_FILE), identity.nonce)


def ttp_url_from_args(args: argparse.Namespace) -> str | None:
    if args.server_id and not args.meta_data:
        return None
    return ttp_url_from_meta_data(args.meta_data or default_meta_data())


def _receipt_lines(receipt: ReceiptStatus) -> list[str]:
    if receipt.receipt is None:
        return [f"launch receipt: {'absent' if not receipt.present else receipt.problem}"]
    r = receipt.receipt
    return [f"launch receipt: {r.verdict} for profile {r.requested_profile} (host meets "
            f"{r.satisfied_profile}) on host {r.host} at {format_time(r.issued_at)}",
            f"receipt signature: {receipt.signature}"
            + (f" (key from {receipt.key_source})" if receipt.key_source else "")
            + f"; bound to this VM's nonce: {'yes' if receipt.bound_to_nonce else 'NO'}"]


def status_text(identity: GuestIdentity, receipt: ReceiptStatus | None = None) -> str:
    receipt = receipt or ReceiptStatus(present=False)
    document = status_document(identity, receipt)
    return "\n".join([
        "trusted launch: this VM holds its launch nonce; verify it with",
        f"  trusted-launch verify --server-id {document['server_id']} "
        "--address <this VM>:<port> --nonce-file <your nonce file>",
        f"SSH host key: {document['ssh_host_key_fingerprint']}",
        *_receipt_lines(receipt), json.dumps(document)])


def network_config_command(directory: str) -> int:
    """``--configure-network``: static addresses from the config drive now, else DHCP."""
    source = default_network_data()
    try:
        needs_dhcp = configure_network(directory, source)
    except (NetworkDataError, OSError) as exc:
        print(f"trusted-launch-guest: error: network_data.json: {exc}; "
              "falling back to DHCP", file=sys.stderr)
        return NEEDS_DHCP
    print(f"trusted-launch-guest: network from {source or 'DHCP (no network_data.json)'}"
          + ("; DHCP needed" if needs_dhcp else "; static addresses set"))
    return NEEDS_DHCP if needs_dhcp else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if args.configure_network:
        return network_config_command(args.configure_network)
    try:
        identity = identity_from_args(args)
        receipt = receipt_status_from_args(args, identity)
        if args.motd:
            write_motd(args.motd, motd_text(receipt, ttp_url_from_args(args)))
        if args.status:
            print(status_text(identity, receipt))
            return 0
        mutual = MutualAuthenticator(identity, authorized_keys=args.authorized_keys)
        server = ChallengeServer(parse_listen(args.listen), identity, mutual=mutual,
                                 receipt_status=receipt)
    except (GuestSetupError, ValueError, OSError) as exc:
        print(f"trusted-launch-guest: error: {exc}", file=sys.stderr)
        return 1
    logging.getLogger(__name__).info(
        "answering challenges for server %s on %s (SSH host key %s)",
        identity.server_id, args.listen, identity.ssh_host_key_fingerprint)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
