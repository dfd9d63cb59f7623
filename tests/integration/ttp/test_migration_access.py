"""Revision 0006 on each database server: enrolled hosts stay enrolled, and registered."""

from __future__ import annotations

import contextlib
import pathlib
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from trusted_launch.sandbox.databases import (
    DatabaseUnavailable,
    mysql_database,
    postgres_database,
)
from trusted_launch.ttp.db.access import AccessStore
from trusted_launch.ttp.db.api import TTPDatabase
from trusted_launch.ttp.db.migration import db_sync, db_version


@contextlib.contextmanager
def _sqlite(directory: pathlib.Path) -> Iterator[str]:
    yield f"sqlite:///{directory / 'ttp.sqlite'}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres),
                        pytest.param("mysql", marks=pytest.mark.mysql)])
def empty_database(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[str]:
    make = {"sqlite": lambda: _sqlite(tmp_path), "postgresql": postgres_database,
            "mysql": mysql_database}[request.param]
    try:
        with make() as url:
            yield url
    except DatabaseUnavailable as exc:
        pytest.skip(str(exc))


def test_upgrade_registers_enrolled_hosts_and_drops_pending_ones(empty_database: str) -> None:
    db_sync(empty_database, "0005")
    engine = sa.create_engine(empty_database)
    hosts = sa.table("hosts", *(sa.column(c) for c in (
        "name", "state", "ek_cert_fingerprint", "ek_public", "ak_public", "ak_name",
        "pending_ak_public", "credential_digest", "challenge_expires_at")))
    common = dict.fromkeys(c.name for c in hosts.columns)
    with engine.begin() as connection:
        connection.execute(sa.insert(hosts), [
            {**common, "name": "enrolled", "state": "active", "ek_cert_fingerprint": "a" * 64,
             "ek_public": "e", "ak_public": "ak", "ak_name": "00"},
            {**common, "name": "half-way", "state": "pending", "ek_cert_fingerprint": "b" * 64,
             "ek_public": "e", "pending_ak_public": "ak", "credential_digest": "c" * 64,
             "challenge_expires_at": 2**40}])
    engine.dispose()
    db_sync(empty_database)
    assert db_version(empty_database) == "0006"
    db = TTPDatabase(empty_database)
    try:
        registrations = AccessStore(db).registrations(now=0)
        assert [(r.name, r.state, r.ek_cert_fingerprint, r.enrollment_approved)
                for r in registrations] == [("enrolled", "active", "a" * 64, False)]
        assert db.get_host("half-way") is None
        columns = {c["name"] for c in sa.inspect(db.engine).get_columns("hosts")}
        assert "credential_digest" not in columns and "pending_ak_public" not in columns
    finally:
        db.dispose()
    _downgrade(empty_database, "0005")
    assert db_version(empty_database) == "0005"
    engine = sa.create_engine(empty_database)
    assert "credential_digest" in {c["name"] for c in sa.inspect(engine).get_columns("hosts")}
    engine.dispose()


def _downgrade(url: str, revision: str) -> None:
    from alembic import command

    from trusted_launch.ttp.db.migration import _alembic_config
    config = _alembic_config(url)
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, revision)
    finally:
        engine.dispose()
