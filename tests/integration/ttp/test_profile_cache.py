"""Each worker caches the profile set, yet sees another worker's change on its next request.

Two ProfileStores on two database handles stand for two TTP worker processes
(migration 0005's revision counter), on SQLite, PostgreSQL and MariaDB.
"""

from __future__ import annotations

import secrets

import pytest

from trusted_launch.ttp.db.api import TTPDatabase
from trusted_launch.ttp.db.migration import db_sync
from trusted_launch.ttp.profiles import ProfileStore


@pytest.fixture
def workers(ttp_database_url):
    db_sync(ttp_database_url)
    first, second = TTPDatabase(ttp_database_url), TTPDatabase(ttp_database_url)
    yield ProfileStore(first), ProfileStore(second)
    first.dispose()
    second.dispose()


@pytest.fixture
def name(workers) -> str:
    profile = f"cache-{secrets.token_hex(4)}"
    yield profile
    workers[1].db.delete_profile(profile)


def document(name: str, level: int, description: str) -> dict:
    return {"name": name, "level": level, "description": description,
            "require_secure_boot": False}


def test_an_unchanged_profile_set_is_not_reloaded(workers):
    first, _ = workers
    assert first.profile_set() is first.profile_set()


def test_another_workers_changes_are_seen_on_the_next_call(workers, name):
    first, second = workers
    level = 900 + secrets.randbelow(90)
    before = first.profile_set()
    assert name not in before
    second.put(name, document(name, level, "created"))
    assert first.profile_set().get(name).description == "created"
    second.put(name, document(name, level, "replaced"))
    assert first.profile_set().get(name).description == "replaced"
    second.delete(name)
    assert name not in first.profile_set()


def test_every_change_moves_the_revision(workers, name):
    first, second = workers
    revisions = [first.db.profile_revision()]
    second.put(name, document(name, 990, "created"))
    revisions.append(first.db.profile_revision())
    second.put(name, document(name, 990, "created"))  # the same document again
    revisions.append(first.db.profile_revision())
    second.delete(name)
    revisions.append(first.db.profile_revision())
    assert revisions == sorted(set(revisions)) and len(revisions) == 4
