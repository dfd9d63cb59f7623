"""The ``trusted-launch`` command: evidence tools, tenant tools and the demo.

Each sub-command lives in its own module under :mod:`trusted_launch.cmd` and
exposes ``register(subparsers)``; errors the tools expect (bad input, refused
attestation) end in one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from trusted_launch.cmd.help_text import describe_subcommands

_COMMAND_MODULES = ("eventlog", "ima", "quote", "token", "verify", "receipt", "demo", "host",
                    "image", "configure")


class CommandError(Exception):
    """An expected failure: printed as one line, exit status 1."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trusted-launch",
        description="Trusted launch of VM instances on attested hosts.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(f"trusted_launch.cmd.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"trusted_launch.cmd.{name}":
                raise
            continue
        module.register(subparsers)
    return describe_subcommands(parser)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (CommandError, ValueError, OSError) as exc:
        print(f"trusted-launch {args.command}: error: {describe_error(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"trusted-launch {args.command}: interrupted", file=sys.stderr)
        return 130


def describe_error(exc: Exception) -> str:
    """One line; a file error names the file first (``PATH: no such file or directory``)."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return " ".join(str(exc).split())


if __name__ == "__main__":
    sys.exit(main())
