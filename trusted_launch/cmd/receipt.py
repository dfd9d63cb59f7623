"""``trusted-launch receipt``: the TTP's signed receipts of a launch (requirement R5)."""

from __future__ import annotations

import argparse
import json

from trusted_launch.client.errors import ClientError
from trusted_launch.client.nonce_store import check_nonce_file_matches, load_nonce
from trusted_launch.client.receipts import fetch_receipts
from trusted_launch.cmd.cli import CommandError
from trusted_launch.crypto.errors import TokenMalformed
from trusted_launch.crypto.receipt import (
    Receipt,
    ReceiptError,
    check_binding,
    format_time,
    load_receipt_public_key,
    receipt_key_id,
    verify_receipt,
)
from trusted_launch.crypto.token import check_token_text, token_digest


def register(subparsers) -> None:
    parser = subparsers.add_parser("receipt", help="fetch and check the TTP's launch receipts")
    actions = parser.add_subparsers(dest="action", required=True)
    show = actions.add_parser("show", help="fetch, verify and print the receipts of a token")
    show.add_argument("--ttp", required=True, help="TTP base URL (https://...)")
    token = show.add_mutually_exclusive_group(required=True)
    token.add_argument("--token", help="the launch token text")
    token.add_argument("--token-file", help="file holding the launch token")
    show.add_argument("--nonce-file", required=True, help="nonce file from 'token create'")
    show.add_argument("--ca-file", help="CA bundle to verify the TTP's TLS certificate")
    show.add_argument("--json", action="store_true", help="print one JSON object")
    show.set_defaults(func=show_receipts)
    check = actions.add_parser("verify", help="check a receipt file offline")
    check.add_argument("receipt_file", help="receipt JSON (e.g. from the config drive)")
    check.add_argument("--key-file", required=True, help="TTP receipt public key (PEM)")
    check.add_argument("--nonce-file", help="also check the receipt is bound to this nonce")
    check.add_argument("--json", action="store_true", help="print one JSON object")
    check.set_defaults(func=verify_file)


def _token_text(args: argparse.Namespace) -> str:
    if args.token:
        return args.token.strip()
    with open(args.token_file, encoding="ascii") as handle:
        return handle.read(8192).strip()


def describe(receipt: Receipt) -> str:
    """One line per receipt, for people."""
    head = (f"{format_time(receipt.issued_at)} {receipt.verdict.upper()} "
            f"attestation {receipt.attestation_id} host {receipt.host} "
            f"launch {receipt.launch_id} profile {receipt.requested_profile}")
    if receipt.trusted:
        return f"{head} (host meets {receipt.satisfied_profile}) image {receipt.image_digest}"
    return f"{head}: {receipt.check}: {receipt.reason}"


def show_receipts(args: argparse.Namespace) -> int:
    nonce = load_nonce(args.nonce_file)
    token = _token_text(args)
    try:
        check_token_text(token)
        check_nonce_file_matches(args.nonce_file, token_digest(token).hex())
        receipts = fetch_receipts(args.ttp, token, nonce, ca_file=args.ca_file)
    except (TokenMalformed, ClientError) as exc:
        raise CommandError(str(exc)) from None
    if args.json:
        print(json.dumps({"verified": True, "receipts": [r.to_json() for r in receipts]}))
        return 0
    print(f"{len(receipts)} signed receipt(s), all verified against the TTP receipt key:")
    for receipt in receipts:
        print(describe(receipt))
    return 0


def verify_file(args: argparse.Namespace) -> int:
    try:
        with open(args.key_file, "rb") as handle:
            key = load_receipt_public_key(handle.read(65536))
        with open(args.receipt_file, "rb") as handle:
            receipt = verify_receipt(handle.read(65536), {receipt_key_id(key): key}).receipt
        if args.nonce_file:
            check_binding(receipt, nonce=load_nonce(args.nonce_file))
    except ReceiptError as exc:
        raise CommandError(str(exc)) from None
    if args.json:
        print(json.dumps({"verified": True, "receipt": receipt.to_json()}))
    else:
        print(f"receipt signature OK: {describe(receipt)}")
    return 0
