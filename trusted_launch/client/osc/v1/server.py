"""``openstack trusted server create`` (steps 1-3) and ``trusted server verify`` (step 15)."""

from __future__ import annotations

import argparse
import shlex
import uuid

from osc_lib import exceptions
from osc_lib.command import command

from trusted_launch.client.challenge import known_hosts_line, verify_vm
from trusted_launch.client.errors import ClientError
from trusted_launch.client.nonce_store import load_nonce
from trusted_launch.client.osc.v1.image_digest import (
    add_digest_arguments,
    cloud_client,
    image_digest,
)
from trusted_launch.client.osc.v1.token import add_ttp_arguments, make_token, property_arguments
from trusted_launch.crypto.errors import CryptoError


class CreateServer(command.ShowOne):
    """Make a launch token and create a server that requests a trusted launch.

    The server gets the properties trusted_sp, trusted_ttp and trusted_token and
    a config drive (where the host writes N). --print-command only prints the
    equivalent 'openstack server create' command line.
    """

    auth_required = True

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("name", metavar="<server-name>", help="new server name")
        parser.add_argument("--image", metavar="<image>", required=True,
                            help="image to boot (name or ID); unless --image-file or "
                                 "--image-digest is given, the token names Glance's stored "
                                 "os_hash_value of it (or, with --download-image, the digest "
                                 "of its downloaded bytes)")
        parser.add_argument("--flavor", metavar="<flavor>", required=True,
                            help="flavor (name or ID)")
        parser.add_argument("--network", metavar="<network>", action="append", default=[],
                            help="network to attach (name or ID, repeatable; default: auto)")
        parser.add_argument("--key-name", metavar="<key-name>", help="keypair to inject")
        parser.add_argument("--print-command", action="store_true",
                            help="print the 'openstack server create' command, create nothing")
        add_ttp_arguments(parser)
        add_digest_arguments(parser, with_image=False)
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> tuple[tuple, tuple]:
        resolved, image = image_digest(self.app, parsed_args)
        token, nonce_file = make_token(parsed_args, resolved.digest)
        common = (nonce_file, parsed_args.sp, parsed_args.ttp, str(resolved.digest),
                  resolved.source)
        common_columns = ("nonce_file", "trusted_sp", "trusted_ttp", "image_digest",
                          "image_digest_source")
        if parsed_args.print_command:
            return ("command", *common_columns), (self._command(parsed_args, token), *common)
        server = self._create(parsed_args, image, token)
        return ("id", "name", "status", *common_columns), (server.id, server.name,
                                                             server.status, *common)

    @staticmethod
    def _command(args: argparse.Namespace, token: str) -> str:
        argv = ["openstack", "server", "create", "--image", args.image, "--flavor", args.flavor]
        for network in args.network:
            argv += ["--network", network]
        if args.key_name:
            argv += ["--key-name", args.key_name]
        argv += ["--config-drive", "True", *property_arguments(args, token), args.name]
        return shlex.join(argv)

    def _create(self, args: argparse.Namespace, image, token: str):
        compute = cloud_client(self.app, "compute")
        if image is None:
            image = cloud_client(self.app, "image").find_image(args.image, ignore_missing=False)
        flavor = compute.find_flavor(args.flavor, ignore_missing=False)
        attributes = {
            "name": args.name, "image_id": image.id, "flavor_id": flavor.id,
            "networks": self._networks(args.network), "config_drive": True,
            "metadata": {"trusted_sp": args.sp, "trusted_ttp": args.ttp,
                         "trusted_token": token},
        }
        if args.key_name:
            attributes["key_name"] = args.key_name
        return compute.create_server(**attributes)

    def _networks(self, names: list[str]) -> list[dict] | str:
        if not names:
            return "auto"
        network = cloud_client(self.app, "network")
        return [{"uuid": network.find_network(name, ignore_missing=False).id}
                for name in names]


class VerifyServer(command.ShowOne):
    """Challenge a server to prove it knows its launch nonce; show its SSH host key pin."""

    auth_required = False

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser = super().get_parser(prog_name)
        parser.add_argument("server", metavar="<server>",
                            help="server ID (or name: looked up in Nova)")
        parser.add_argument("--address", metavar="<host:port>", required=True,
                            help="address of the server's trusted-launch agent")
        parser.add_argument("--nonce-file", metavar="<file>", required=True,
                            help="nonce file written by 'openstack trusted token create'")
        parser.add_argument("--expect-fingerprint", metavar="<SHA256:...>",
                            help="fail unless the SSH host key has this fingerprint")
        parser.add_argument("--timeout", metavar="<seconds>", type=float, default=5,
                            help="seconds to wait for the agent (default: 5)")
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> tuple[tuple, tuple]:
        server_id = self._server_id(parsed_args.server)
        try:
            nonce = load_nonce(parsed_args.nonce_file)
            vm = verify_vm(parsed_args.address, server_id, nonce,
                           expected_fingerprint=parsed_args.expect_fingerprint,
                           timeout=parsed_args.timeout)
            line = known_hosts_line(parsed_args.address, vm)
        except (ClientError, CryptoError, ValueError, OSError) as exc:
            raise exceptions.CommandError(str(exc)) from None
        columns = ("verified", "server_id", "ssh_host_key_fingerprint", "known_hosts")
        return columns, (True, vm.server_id, vm.ssh_host_key_fingerprint, line or "")

    def _server_id(self, server: str) -> str:
        try:
            return str(uuid.UUID(server))
        except ValueError:
            compute = cloud_client(self.app, "compute")
            return compute.find_server(server, ignore_missing=False).id
