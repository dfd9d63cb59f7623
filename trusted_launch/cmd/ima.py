"""``trusted-launch ima``: replay Linux IMA measurement lists, generate test lists."""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import tempfile

from trusted_launch.cmd.cli import CommandError
from trusted_launch.evidence import ima
from trusted_launch.evidence.algorithms import HashAlg, hash_alg_from_name

_BANK_CHOICES = ("sha1", "sha256", "sha384", "sha512")
_MAX_GENERATED = 10_000_000


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("ima", help="Linux IMA measurement lists")
    commands = parser.add_subparsers(dest="ima_command", required=True)
    _register_replay(commands)
    _register_generate(commands)


def _register_replay(commands: argparse._SubParsersAction) -> None:
    replay = commands.add_parser(
        "replay", help="verify template hashes and replay PCR 10",
        description="Verify every entry's template hash and print the PCR 10 value each "
                    "bank must hold. The list may be ascii or binary.")
    replay.add_argument("file", type=pathlib.Path, help="ascii or binary measurement list")
    replay.add_argument("--json", action="store_true",
                        help='print {"<bank>": {"10": "<hex>"}} only')
    replay.add_argument("--state", type=pathlib.Path, metavar="STATEFILE",
                        help="resume from this saved state if it exists; save the new one to it")
    replay.add_argument("--bank", action="append", choices=_BANK_CHOICES,
                        help="PCR bank to replay (repeatable; default sha1 and sha256)")
    replay.set_defaults(func=_replay)


def _register_generate(commands: argparse._SubParsersAction) -> None:
    generate = commands.add_parser(
        "generate", help="write a synthetic ima-ng list with correct template hashes")
    generate.add_argument("out", type=pathlib.Path, help="file to write")
    generate.add_argument("--count", type=int, default=1000, help="number of entries")
    generate.add_argument("--algorithm", default="sha256", choices=_BANK_CHOICES,
                          help="file digest algorithm (default sha256)")
    generate.add_argument("--binary", action="store_true",
                          help="binary_runtime_measurements form instead of ascii")
    generate.set_defaults(func=_generate)


def _load_state(path: pathlib.Path | None) -> ima.ImaReplayState | None:
    if path is None or not path.exists() or path.stat().st_size == 0:
        return None
    try:
        obj = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CommandError(f"state file {path} is not JSON: {exc}") from None
    return ima.ImaReplayState.from_json(obj)


def _save_state(path: pathlib.Path, state: ima.ImaReplayState) -> None:
    """Write atomically: a crash leaves the old state, never half a file."""
    directory = path.resolve().parent
    with tempfile.NamedTemporaryFile("w", dir=directory, prefix=".ima-state-",
                                     delete=False) as handle:
        json.dump(state.to_json(), handle)
    os.replace(handle.name, path)


def _replay(args: argparse.Namespace) -> int:
    banks: tuple[HashAlg, ...] = (tuple(dict.fromkeys(hash_alg_from_name(b) for b in args.bank))
                                  if args.bank else ima.DEFAULT_BANKS)
    state = ima.replay_ima_list(args.file.read_bytes(), banks, _load_state(args.state))
    if args.state is not None:
        _save_state(args.state, state)
    if args.json:
        print(json.dumps(state.pcr_values(), sort_keys=True))
        return 0
    print(f"entries: {state.count}")
    for bank, value in state.pcrs.items():
        print(f"{bank.bank_name} PCR{ima.IMA_PCR}: {value.hex()}")
    return 0


def _generate(args: argparse.Namespace) -> int:
    if not 0 <= args.count <= _MAX_GENERATED:
        raise CommandError(f"--count must be between 0 and {_MAX_GENERATED}")
    data = ima.synthetic_ima_ng_list(args.count, alg=args.algorithm, binary=args.binary)
    args.out.write_bytes(data)
    print(f"wrote {args.count} entries ({len(data)} bytes) to {args.out}")
    return 0
