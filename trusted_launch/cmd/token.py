"""``trusted-launch token create``: make a launch token for the TTP (steps 1-2)."""

from __future__ import annotations

import argparse
import json
import sys

from trusted_launch.client.errors import ClientError
from trusted_launch.client.image_encryption import read_key_file
from trusted_launch.client.launch_token import create_launch_token
from trusted_launch.cmd.cli import CommandError
from trusted_launch.crypto.digest import ImageDigest, digest_file
from trusted_launch.crypto.token import TokenTooLong


def register(subparsers) -> None:
    parser = subparsers.add_parser("token", help="make launch tokens for a TTP")
    actions = parser.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="make a token; keep its nonce in a 0600 file")
    create.add_argument("--ttp", required=True, help="TTP base URL (https://...)")
    create.add_argument("--sp", required=True, help="security profile name (e.g. high)")
    image = create.add_mutually_exclusive_group(required=True)
    image.add_argument("--image-file", help="image file to digest (sha512)")
    image.add_argument("--image-digest", help="image digest ALG:HEX (sha256 or sha512)")
    create.add_argument("--digest-algorithm", choices=("sha512", "sha256"), default="sha512",
                        help="algorithm for --image-file (default: sha512, Glance's default)")
    create.add_argument("--ca-file", help="CA bundle to verify the TTP's TLS certificate")
    create.add_argument("--lifetime", type=int, default=3600, help="token lifetime in seconds")
    create.add_argument("--nonce-dir", help="where to keep the nonce "
                        "(default: ~/.local/share/trusted-launch/nonces)")
    create.add_argument("--image-key-file", metavar="K",
                        help="put this image key in the token (from 'image encrypt')")
    create.add_argument("--json", action="store_true", help="print one JSON object")
    create.set_defaults(func=create_token)


def create_token(args: argparse.Namespace) -> int:
    if args.image_file:
        image_digest = digest_file(args.image_file, args.digest_algorithm)
    else:
        image_digest = ImageDigest.parse(args.image_digest)
    try:
        image_key = read_key_file(args.image_key_file) if args.image_key_file else None
        token, nonce_path = create_launch_token(
            args.ttp, args.sp, image_digest, ca_file=args.ca_file,
            lifetime_s=args.lifetime, nonce_dir=args.nonce_dir, image_key=image_key)
    except (ClientError, TokenTooLong) as exc:
        raise CommandError(str(exc)) from None
    if args.json:
        print(json.dumps({"token": token, "nonce_file": str(nonce_path), "profile": args.sp,
                          "image_digest": str(image_digest), "ttp": args.ttp}))
    else:
        print(token)
        print(f"nonce kept in {nonce_path}; use: openstack server create "
              f"--property trusted_sp={args.sp} --property trusted_ttp={args.ttp} "
              "--property trusted_token=<token> ...", file=sys.stderr)
    return 0
