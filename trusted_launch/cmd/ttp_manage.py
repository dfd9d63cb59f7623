"""``trusted-launch-ttp-manage``: database, keys, CA and profile administration."""

from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import sys
from collections.abc import Callable

from oslo_config import cfg

from trusted_launch.cmd.cli import describe_error
from trusted_launch.cmd.help_text import describe_subcommands
from trusted_launch.ttp.configuration import ConfigError, load_config

DRAFT_NAME = "draft"
DRAFT_LEVEL = 20


class ManageError(Exception):
    """An expected failure: printed as one line, exit status 1."""


def _conf(args: argparse.Namespace) -> cfg.ConfigOpts:
    return load_config(args.config_file, prog="trusted-launch-ttp-manage")


def _keys(conf: cfg.ConfigOpts):
    from trusted_launch.ttp.keystore import TokenKeyStore
    return TokenKeyStore(conf.key_store.key_dir, conf.key_store.rotation_overlap)


def _ca(conf: cfg.ConfigOpts):
    from trusted_launch.ttp.keystore import AttestationCA
    return AttestationCA(conf.key_store.attestation_ca_cert, conf.key_store.attestation_ca_key)


def _profiles(conf: cfg.ConfigOpts):
    from trusted_launch.ttp.db.api import TTPDatabase
    from trusted_launch.ttp.profiles import ProfileStore
    return ProfileStore(TTPDatabase(conf.database.connection))


def db_sync(conf: cfg.ConfigOpts, args: argparse.Namespace) -> int:
    """Migrate the database; create the CA, the first token key, bootstrap profiles."""
    from trusted_launch.ttp.db.migration import db_sync as sync
    sync(conf.database.connection)
    print("database at revision head")
    if _ca(conf).init():
        print(f"created attestation CA {conf.key_store.attestation_ca_cert}")
    key_id = _keys(conf).ensure_current()
    if key_id:
        print(f"created token key {key_id}")
    if conf.attestation.profile_dir:
        for name in _profiles(conf).bootstrap(conf.attestation.profile_dir):
            print(f"added profile {name}")
    return 0


def db_purge_tokens(conf: cfg.ConfigOpts, args: argparse.Namespace) -> int:
    """Delete replay-protection rows of tokens that have expired."""
    import time

    from trusted_launch.ttp.db.api import TTPDatabase
    print(TTPDatabase(conf.database.connection).purge_used_tokens(int(time.time())))
    return 0


def keys_rotate(conf: cfg.ConfigOpts, args: argparse.Namespace) -> int:
    print(_keys(conf).rotate())
    return 0


def keys_list(conf: cfg.ConfigOpts, args: argparse.Namespace) -> int:
    for key in _keys(conf).keys():
        entry = key.publication()
        until = "current" if key.not_after is None else "until " + datetime.datetime.fromtimestamp(
            key.not_after, datetime.UTC).isoformat()
        print(f"{entry['id']}  {entry['public_key']}  {until}")
    return 0


def ca_init(conf: cfg.ConfigOpts, args: argparse.Namespace) -> int:
    created = _ca(conf).init()
    print(("created " if created else "exists: ") + conf.key_store.attestation_ca_cert)
    return 0


def profile_set(conf: cfg.ConfigOpts, args: argparse.Namespace) -> int:
    from trusted_launch.policy import PolicyError, load_profile
    from trusted_launch.ttp.errors import APIError
    try:
        document = load_profile(pathlib.Path(args.file).read_bytes()).to_document()
        created, _ = _profiles(conf).put(args.name, document)
    except (PolicyError, APIError) as exc:
        raise ManageError(str(exc)) from exc
    print(f"{'created' if created else 'replaced'} profile {args.name}")
    return 0


def profile_list(conf: cfg.ConfigOpts, args: argparse.Namespace) -> int:
    for summary in _profiles(conf).summaries():
        print(f"{summary['level']:>5}  {summary['name']}  {summary['description']}")
    return 0


def profile_draft(conf: cfg.ConfigOpts | None, args: argparse.Namespace) -> int:
    import yaml

    from trusted_launch.evidence.errors import EvidenceError
    from trusted_launch.evidence.eventlog import parse_event_log, replay
    from trusted_launch.policy import PolicyError, draft_profile
    try:
        log = parse_event_log(pathlib.Path(args.eventlog).read_bytes())
        document = draft_profile(args.name, args.level, log, replay(log))
    except (EvidenceError, PolicyError) as exc:
        raise ManageError(f"{args.eventlog}: {exc}") from exc
    print(f"# Drafted from {pathlib.Path(args.eventlog).name}: review, then load with\n"
          f"# trusted-launch-ttp-manage --config-file ttp.conf profile set {args.name} FILE")
    print(yaml.safe_dump(json.loads(json.dumps(document)), sort_keys=False), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trusted-launch-ttp-manage",
                                     description="Administer the trusted-launch TTP.")
    parser.add_argument("--config-file", action="append", metavar="FILE",
                        help="TTP configuration file (repeatable)")
    groups = parser.add_subparsers(dest="group", required=True)
    db = groups.add_parser(
        "db", help="the TTP database: create or migrate its schema, purge used tokens"
    ).add_subparsers(dest="action", required=True)
    db.add_parser(
        "sync", help="create or migrate the schema; create the AK CA and the first token key "
                     "if missing; load [attestation] profile_dir").set_defaults(func=db_sync)
    db.add_parser("purge-tokens", help="forget used tokens that have expired").set_defaults(
        func=db_purge_tokens)
    keys = groups.add_parser(
        "keys", help="the token keys tenants seal launch tokens to").add_subparsers(dest="action",
                                                                       required=True)
    keys.add_parser(
        "rotate", help="make a new current key; the previous one stays usable for "
                       "[key_store] rotation_overlap seconds").set_defaults(func=keys_rotate)
    keys.add_parser("list", help="list the usable keys (id, public key, until when)"
                    ).set_defaults(func=keys_list)
    ca = groups.add_parser(
        "ca", help="the attestation CA that certifies compute hosts' AKs"
    ).add_subparsers(dest="action", required=True)
    ca.add_parser(
        "init", help="create the CA key and certificate at [key_store] attestation_ca_* "
                     "if missing").set_defaults(func=ca_init)
    profile = groups.add_parser(
        "profile", help="the security profiles hosts are judged against").add_subparsers(
        dest="action", required=True)
    put = profile.add_parser("set", help="create or replace a profile from a file")
    put.add_argument("name", help="profile name (must equal the document's name)")
    put.add_argument("file", help="profile document (YAML or JSON)")
    put.set_defaults(func=profile_set)
    profile.add_parser("list", help="list profiles").set_defaults(func=profile_list)
    draft = profile.add_parser("draft", help="draft a profile from a known-good event log")
    draft.add_argument("--eventlog", required=True, metavar="LOG",
                       help="binary event log of a known-good host "
                            "(/sys/kernel/security/tpm0/binary_bios_measurements)")
    draft.add_argument("--name", default=DRAFT_NAME,
                       help=f"profile name (default: {DRAFT_NAME})")
    draft.add_argument("--level", default=DRAFT_LEVEL, type=int,
                       help=f"profile level, higher is stricter (default: {DRAFT_LEVEL}; the "
                            "examples use low 10, medium 20, high 30)")
    draft.set_defaults(func=profile_draft, no_conf=True)
    return describe_subcommands(parser)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[cfg.ConfigOpts | None, argparse.Namespace], int] = args.func
    try:
        conf = None if getattr(args, "no_conf", False) else _conf(args)
        return int(handler(conf, args) or 0)
    except (ManageError, ConfigError, ValueError, OSError, cfg.Error) as exc:
        print(f"trusted-launch-ttp-manage: error: {describe_error(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("trusted-launch-ttp-manage: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        from sqlalchemy.exc import SQLAlchemyError

        from trusted_launch.ttp.db.api import DatabaseError
        from trusted_launch.ttp.keystore import KeyStoreError
        if isinstance(exc, DatabaseError | SQLAlchemyError):
            print(f"trusted-launch-ttp-manage: error: {_database_problem(exc)}", file=sys.stderr)
            return 1
        if isinstance(exc, KeyStoreError):
            print(f"trusted-launch-ttp-manage: error: {exc}", file=sys.stderr)
            return 1
        raise


_MISSING_TABLE = ("no such table", "does not exist", "doesn't exist")


def _database_problem(exc: Exception) -> str:
    """One line: the driver's own first line (never the SQL or its parameters) and the fix."""
    error = exc if hasattr(exc, "orig") or exc.__cause__ is None else exc.__cause__
    detail = str(getattr(error, "orig", None) or "").strip()
    detail = detail.splitlines()[0] if detail else type(error).__name__
    if any(marker in detail for marker in _MISSING_TABLE):
        return (f"the database has no TTP schema yet ({detail}): run "
                "'trusted-launch-ttp-manage --config-file FILE db sync' first")
    return (f"database unavailable ({detail}): check [database] connection and that the "
            "database server is running and reachable")


if __name__ == "__main__":
    sys.exit(main())
