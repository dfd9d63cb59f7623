"""Give every sub-command's ``--help`` a description: the one-line help its parent lists.

argparse shows a sub-command's ``help`` only in its parent's listing; its own
``--help`` stays without a description unless one is passed again. Calling
:func:`describe_subcommands` once on the finished parser copies each help
line down, so the text is written once, next to ``add_parser``.
"""

from __future__ import annotations

import argparse


def describe_subcommands(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Set ``description`` from ``help`` on every nested sub-parser that has none."""
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        helps = {choice.dest: choice.help for choice in action._choices_actions}
        for name, subparser in action.choices.items():
            if not subparser.description and helps.get(name):
                text = helps[name]
                subparser.description = text[0].upper() + text[1:] + (
                    "" if text.endswith(".") else ".")
            describe_subcommands(subparser)
    return parser
