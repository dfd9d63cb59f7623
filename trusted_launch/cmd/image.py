"""``trusted-launch image encrypt``: a LUKS-encrypted qcow2 for a trusted launch.

Prints the digest of the encrypted image (``--image-digest`` of ``token
create``); put the key in the token with ``token create --image-key-file``.
"""

from __future__ import annotations

import argparse
import json
import sys

from trusted_launch.client.errors import ClientError
from trusted_launch.client.image_encryption import encrypt_image, load_or_create_key
from trusted_launch.cmd.cli import CommandError


def register(subparsers) -> None:
    parser = subparsers.add_parser("image", help="prepare images for a trusted launch")
    actions = parser.add_subparsers(dest="action", required=True)
    encrypt = actions.add_parser(
        "encrypt", help="convert a raw/qcow2 image to a LUKS-encrypted qcow2")
    encrypt.add_argument("source", metavar="SRC", help="raw or qcow2 image")
    encrypt.add_argument("target", metavar="DST", help="encrypted qcow2 to write (new file)")
    encrypt.add_argument("--key-file", required=True, metavar="K",
                         help="image key: used if it exists, else a new key is written "
                              "there (0600)")
    encrypt.add_argument("--digest-algorithm", choices=("sha512", "sha256"), default="sha512",
                         help="algorithm of the printed digest (default: sha512)")
    encrypt.add_argument("--json", action="store_true", help="print one JSON object")
    encrypt.set_defaults(func=encrypt_command)


def encrypt_command(args: argparse.Namespace) -> int:
    try:
        key, created = load_or_create_key(args.key_file)
        image = encrypt_image(args.source, args.target, key,
                              digest_algorithm=args.digest_algorithm)
    except ClientError as exc:
        raise CommandError(str(exc)) from None
    if args.json:
        print(json.dumps({"image": str(image.path), "image_digest": str(image.digest),
                          "key_file": args.key_file, "key_created": created,
                          "source_format": image.source_format}))
    else:
        print(image.digest)
        made = "new key written to" if created else "key from"
        print(f"{image.path}: LUKS qcow2 ({made} {args.key_file}); upload it with "
              "--disk-format qcow2, then: trusted-launch token create "
              f"--image-digest {image.digest} --image-key-file {args.key_file} ...",
              file=sys.stderr)
    return 0
