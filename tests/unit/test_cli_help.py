"""Every sub-command of every console script describes itself in its own ``--help``."""

from __future__ import annotations

import argparse
import pathlib
import subprocess
import sys
from collections.abc import Iterator

import pytest

from trusted_launch.cmd import cli, ttp_manage

BIN_DIR = pathlib.Path(sys.executable).parent


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...]
              ) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, subparser in action.choices.items():
                yield from _commands(subparser, (*path, name))


ALL_COMMANDS = [*_commands(cli.build_parser(), ("trusted-launch",)),
                *_commands(ttp_manage.build_parser(), ("trusted-launch-ttp-manage",))]


@pytest.mark.parametrize("path,parser", ALL_COMMANDS, ids=lambda v: " ".join(v)
                         if isinstance(v, tuple) else "")
def test_every_command_has_a_description(path, parser) -> None:
    assert parser.description and len(parser.description) > 10, " ".join(path)
    help_text = parser.format_help()
    assert parser.description.split()[0] in help_text


@pytest.mark.parametrize("argv,description", [
    (["trusted-launch-ttp-manage", "keys", "rotate"], "Make a new current key"),
    (["trusted-launch-ttp"], "Run the trusted-launch TTP's HTTPS API server"),
    (["trusted-launch-guest"], "Prove to the tenant"),
])
def test_the_description_shows_in_the_console_scripts_help(argv, description) -> None:
    result = subprocess.run([str(BIN_DIR / argv[0]), *argv[1:], "--help"],
                            capture_output=True, text=True, check=True, timeout=60)
    assert description in " ".join(result.stdout.split()) and result.stderr == ""
