"""``trusted-launch verify``: challenge a VM to prove it knows N (step 15)."""

from __future__ import annotations

import argparse
import json

from trusted_launch.client.challenge import known_hosts_line, verify_vm
from trusted_launch.client.errors import ClientError
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
    parser.set_defaults(func=verify)


def verify(args: argparse.Namespace) -> int:
    nonce = load_nonce(args.nonce_file)
    try:
        vm = verify_vm(args.address, args.server_id, nonce,
                       expected_fingerprint=args.expect_fingerprint, timeout=args.timeout)
    except ClientError as exc:
        raise CommandError(str(exc)) from None
    line = known_hosts_line(args.address, vm)
    if args.json:
        print(json.dumps({"verified": True, "server_id": vm.server_id,
                          "ssh_host_key_fingerprint": vm.ssh_host_key_fingerprint,
                          "known_hosts": line}))
        return 0
    print(f"verified: server {vm.server_id} knows its launch nonce")
    print(f"SSH host key fingerprint: {vm.ssh_host_key_fingerprint}")
    if line:
        print(f"pin it: echo '{line}' >> ~/.ssh/known_hosts")
    else:
        print("pin it: accept only this fingerprint on first 'ssh' to the VM")
    return 0
