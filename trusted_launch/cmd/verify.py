"""``trusted-launch verify``: challenge a VM to prove it knows N (step 15)."""

from __future__ import annotations

import argparse
import json

from trusted_launch.client.challenge import known_hosts_line, verify_vm
from trusted_launch.client.errors import ClientError
from trusted_launch.client.mutual import mutual_authenticate
from trusted_launch.client.nonce_store import load_nonce
from trusted_launch.cmd.cli import CommandError


def register(subparsers) -> None:
    parser = subparsers.add_parser("verify", help="check that a VM knows its launch nonce")
    parser.add_argument("--server-id", required=True, help="the VM's Nova server id")
    parser.add_argument("--address", required=True, help="HOST:PORT of the VM's agent")
    parser.add_argument("--nonce-file", required=True, help="nonce file from 'token create'")
    parser.add_argument("--expect-fingerprint", help="required SSH host key fingerprint")
    parser.add_argument("--timeout", type=float, default=5, help="seconds (default 5)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--mutual", action="store_true",
                        help="mutual authentication: also prove N to the VM and open a session")
    parser.add_argument("--authorize-ssh-key", metavar="PUBKEY_FILE",
                        help="after mutual authentication, add this SSH public key to the "
                        "VM's authorized_keys (implies --mutual)")
    parser.set_defaults(func=verify)


def _read_public_key(path: str) -> str:
    with open(path, encoding="ascii") as handle:
        return handle.read(16384).strip()


def _authenticate(args: argparse.Namespace, nonce: bytes) -> tuple[object, dict]:
    """The verified VM and what the mutual session did (empty for the one-way check)."""
    if not (args.mutual or args.authorize_ssh_key):
        return verify_vm(args.address, args.server_id, nonce,
                         expected_fingerprint=args.expect_fingerprint,
                         timeout=args.timeout), {}
    key_line = _read_public_key(args.authorize_ssh_key) if args.authorize_ssh_key else None
    session = mutual_authenticate(args.address, args.server_id, nonce,
                                  expected_fingerprint=args.expect_fingerprint,
                                  timeout=args.timeout)
    done: dict = {"mutual": True}
    if key_line is not None:
        done["authorized_ssh_key"] = session.authorize_ssh_key(key_line)
    return session.vm, done


def verify(args: argparse.Namespace) -> int:
    nonce = load_nonce(args.nonce_file)
    try:
        vm, done = _authenticate(args, nonce)
    except ClientError as exc:
        raise CommandError(str(exc)) from None
    line = known_hosts_line(args.address, vm)
    if args.json:
        print(json.dumps({"verified": True, "server_id": vm.server_id,
                          "ssh_host_key_fingerprint": vm.ssh_host_key_fingerprint,
                          "known_hosts": line, **done}))
        return 0
    print(f"verified: server {vm.server_id} knows its launch nonce")
    if done.get("mutual"):
        print("mutual: the VM verified that this client knows the nonce; session open")
    if done.get("authorized_ssh_key"):
        print(f"SSH key {done['authorized_ssh_key']} added to the VM's authorized_keys")
    print(f"SSH host key fingerprint: {vm.ssh_host_key_fingerprint}")
    if line:
        print(f"pin it: echo '{line}' >> ~/.ssh/known_hosts")
    else:
        print("pin it: accept only this fingerprint on first 'ssh' to the VM")
    return 0
