"""Quote nonces and host status rows on SQLite, PostgreSQL and MariaDB (migration 0004)."""

from __future__ import annotations

import secrets
from concurrent.futures import ThreadPoolExecutor

import pytest

from trusted_launch.ttp.db.api import TTPDatabase
from trusted_launch.ttp.db.migration import db_sync
from trusted_launch.ttp.host_status_store import (
    MAX_CHALLENGES_PER_HOST,
    HostStatusStore,
    NonceState,
    StoredHostStatus,
)

NOW = 1_800_000_000.123


@pytest.fixture
def store(ttp_database_url):
    db_sync(ttp_database_url)
    db = TTPDatabase(ttp_database_url)
    yield HostStatusStore(db)
    db.dispose()


@pytest.fixture
def host() -> str:
    return f"store-{secrets.token_hex(4)}"


def digest(i: int) -> str:
    return f"{i:064x}"


def test_nonce_is_accepted_once(store, host):
    nonce = secrets.token_hex(32)
    store.add_challenge(host, nonce, NOW + 30, NOW)
    assert store.consume_challenge("other-host", nonce, NOW) is NonceState.UNKNOWN
    assert store.consume_challenge(host, nonce, NOW) is NonceState.FRESH
    assert store.consume_challenge(host, nonce, NOW) is NonceState.UNKNOWN


def test_expired_nonce_is_reported_and_gone(store, host):
    nonce = secrets.token_hex(32)
    store.add_challenge(host, nonce, NOW + 1, NOW)
    assert store.consume_challenge(host, nonce, NOW + 2) is NonceState.EXPIRED
    assert store.consume_challenge(host, nonce, NOW) is NonceState.UNKNOWN


def test_live_challenges_per_host_are_bounded(store, host):
    base = secrets.randbits(128) << 64
    for i in range(MAX_CHALLENGES_PER_HOST + 4):
        store.add_challenge(host, digest(base + i), NOW + 30 + i, NOW)
    assert store.consume_challenge(host, digest(base), NOW) is NonceState.UNKNOWN  # oldest out
    newest = digest(base + MAX_CHALLENGES_PER_HOST + 3)
    assert store.consume_challenge(host, newest, NOW) is NonceState.FRESH


def test_status_round_trips_and_save_returns_the_previous(store, host):
    first = StoredHostStatus(host, "high", None, None, NOW, {"version": 1, "count": 2}, 77,
                             {"runtime": "IMA entry 3 not allowed"})
    assert store.save(first) is None
    assert store.get(host) == first
    second = StoredHostStatus(host, None, "quote_pcrs", "differs", NOW + 60)
    assert store.save(second) == first
    assert store.get(host) == second
    listed = {s.host: s for s in store.all()}
    assert listed[host].to_json() == {"host": host, "profile": None, "trusted": False,
                                      "check": "quote_pcrs", "reason": "differs",
                                      "checked_at": NOW + 60,
                                      "last_attested_at": "2027-01-15T08:01:00Z"}
    assert [(r.host, r.profile, r.checked_at) for r in store.last_attested()
            if r.host == host] == [(host, None, NOW + 60)]


def test_concurrent_presentations_of_one_nonce_accept_exactly_one(store, host):
    nonce = secrets.token_hex(32)
    store.add_challenge(host, nonce, NOW + 30, NOW)
    with ThreadPoolExecutor(8) as pool:
        states = list(pool.map(lambda _: store.consume_challenge(host, nonce, NOW), range(8)))
    assert states.count(NonceState.FRESH) == 1
    assert states.count(NonceState.UNKNOWN) == 7


def test_status_of_an_unknown_host_is_none(store, host):
    assert store.get(host) is None
