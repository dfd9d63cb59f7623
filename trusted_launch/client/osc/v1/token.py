"""``openstack trusted token create``: steps 1-2, a launch token for the TTP."""

from __future__ import annotations

import argparse

from osc_lib import exceptions
from osc_lib.command import command

from trusted_launch.client.errors import ClientError
from trusted_launch.client.launch_token import create_launch_token
from trusted_launch.client.osc.v1.image_digest import add_digest_arguments, image_digest
from trusted_launch.crypto.errors import CryptoError


def add_ttp_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by the commands that make a token."""
    parser.add_argument("--ttp", metavar="<url>", required=True,
                        help="TTP base URL (https://...)")
    parser.add_argument("--sp", metavar="<profile>", required=True,
                        help="security profile the host must satisfy (e.g. high)")
    parser.add_argument("--ca-file", metavar="<pem>",
                        help="CA bundle that verifies the TTP's TLS certificate")
    parser.add_argument("--lifetime", metavar="<seconds>", type=int, default=3600,
                        help="token lifetime in seconds (default: 3600)")
    parser.add_argument("--nonce-dir", metavar="<dir>",
                        help="where the 0600 nonce file is kept "
                             "(default: ~/.local/share/trusted-launch/nonces)")


def make_token(args: argparse.Namespace, digest) -> tuple[str, str]:
    """``(token, nonce file)``; N itself never leaves the nonce file."""
    try:
        token, nonce_path = create_launch_token(
            args.ttp, args.sp, digest, ca_file=args.ca_file, lifetime_s=args.lifetime,
            nonce_dir=args.nonce_dir)
    except (ClientError, CryptoError, ValueError, OSError) as exc:
        raise exceptions.CommandError(str(exc)) from None
    return token, str(nonce_path)


def property_arguments(args: argparse.Namespace, token: str) -> list[str]:
    """The ``openstack server create`` arguments that request a trusted launch."""
    return ["--property", f"trusted_sp={args.sp}", "--property", f"trusted_ttp={args.ttp}",
            "--property", f"trusted_token={token}"]


class CreateToken(command.ShowOne):
    """Make a launch token for a TTP; keep its nonce in a 0600 file.

    With --image the digest is the one Glance stored at upload (os_hash_value),
    which trusts Glance; --image-file or --download-image compute it here.
    """

    auth_required = False

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        add_ttp_arguments(parser)
        add_digest_arguments(parser, with_image=True)
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> tuple[tuple, tuple]:
        resolved, _ = image_digest(self.app, parsed_args)
        token, nonce_file = make_token(parsed_args, resolved.digest)
        columns = ("token", "nonce_file", "profile", "ttp", "image_digest",
                   "image_digest_source", "server_create_arguments")
        values = (token, nonce_file, parsed_args.sp, parsed_args.ttp, str(resolved.digest),
                  resolved.source, " ".join(property_arguments(parsed_args, token)))
        return columns, values
