"""A token is bound to the launch id that first redeems it; that launch may re-attest.

Database level on SQLite, PostgreSQL and MariaDB (threads stand in for
worker processes), the Alembic upgrade of rows redeemed before the rule,
and the whole path through the real TTP with real certify evidence.
"""

from __future__ import annotations

import base64
import secrets
import sqlite3
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.fixtures.ttp import TTPServer
from tests.integration.ttp.test_release import PROFILE, _attestation, attested_host  # noqa: F401
from trusted_launch.crypto.binding import certify_qualifying_data
from trusted_launch.crypto.sealing import open_from_bind_key, release_aad
from trusted_launch.tpm import bindkeys
from trusted_launch.ttp.db.api import AttestationRecord, TokenAlreadyUsed, TTPDatabase
from trusted_launch.ttp.db.migration import db_sync, db_version

EXPIRES = 2_000_000_000


def _record(launch_id: str) -> AttestationRecord:
    return AttestationRecord(id=str(uuid.uuid4()), requester="test", host="h",
                             launch_id=launch_id, verdict="trusted", requested_profile="low",
                             satisfied_profile="low", evidence_digests={"event_log": "ab"})


@pytest.fixture
def db(ttp_database_url: str):
    db_sync(ttp_database_url)
    database = TTPDatabase(ttp_database_url)
    yield database
    database.dispose()


def _redeem(db: TTPDatabase, digest: bytes, launch_id: str, certify: str | None = None):
    record = _record(launch_id)
    first = db.record_attestation(record, token_digest=digest, expires_at=EXPIRES,
                                  certify_digest=certify or secrets.token_hex(32))
    return record, first


def test_same_launch_re_attests_and_is_audited_as_such(db: TTPDatabase) -> None:
    digest, launch = secrets.token_bytes(32), str(uuid.uuid4())
    first, none = _redeem(db, digest, launch)
    assert none is None and db.get_attestation(first.id).reason is None
    again, first_id = _redeem(db, digest, launch)
    assert first_id == first.id
    stored = db.get_attestation(again.id)
    assert stored.verdict == "trusted"
    assert stored.reason == (f"re-attestation of launch {launch}; the token was first "
                             f"redeemed in attestation {first.id}")


def test_another_launch_is_refused_and_nothing_is_stored(db: TTPDatabase) -> None:
    digest, launch = secrets.token_bytes(32), str(uuid.uuid4())
    _redeem(db, digest, launch)
    record = _record(str(uuid.uuid4()))
    with pytest.raises(TokenAlreadyUsed, match="redeemed for another launch"):
        db.record_attestation(record, token_digest=digest, expires_at=EXPIRES,
                              certify_digest=secrets.token_hex(32))
    assert db.get_attestation(record.id) is None
    _redeem(db, digest, launch)  # the refused attempt did not disturb the owner


def test_the_same_certify_evidence_is_refused_even_for_the_same_launch(
        db: TTPDatabase) -> None:
    digest, launch, certify = secrets.token_bytes(32), str(uuid.uuid4()), secrets.token_hex(32)
    _redeem(db, digest, launch, certify)
    record = _record(launch)
    with pytest.raises(TokenAlreadyUsed, match="certify evidence was already redeemed"):
        db.record_attestation(record, token_digest=digest, expires_at=EXPIRES,
                              certify_digest=certify)
    assert db.get_attestation(record.id) is None


def _race(db: TTPDatabase, digest: bytes, launches: list[str], certifies: list[str]) -> list:
    def attempt(index: int):
        try:
            return _redeem(db, digest, launches[index], certifies[index])[1] or "first"
        except TokenAlreadyUsed as exc:
            return f"refused: {exc}"
    with ThreadPoolExecutor(max_workers=len(launches)) as pool:
        return list(pool.map(attempt, range(len(launches))))


def test_concurrent_redemptions_for_different_launches_exactly_one_wins(
        db: TTPDatabase) -> None:
    outcomes = _race(db, secrets.token_bytes(32), [str(uuid.uuid4()) for _ in range(6)],
                     [secrets.token_hex(32) for _ in range(6)])
    assert outcomes.count("first") == 1, outcomes
    assert [o for o in outcomes if o != "first"] == [
        "refused: this launch token was already redeemed for another launch"] * 5


def test_concurrent_re_attestations_of_one_launch_all_succeed_once_first(
        db: TTPDatabase) -> None:
    launch = str(uuid.uuid4())
    outcomes = _race(db, secrets.token_bytes(32), [launch] * 6,
                     [secrets.token_hex(32) for _ in range(6)])
    assert outcomes.count("first") == 1, outcomes
    assert not [o for o in outcomes if o.startswith("refused")], outcomes


def test_concurrent_identical_evidence_is_redeemed_exactly_once(db: TTPDatabase) -> None:
    launch, certify = str(uuid.uuid4()), secrets.token_hex(32)
    outcomes = _race(db, secrets.token_bytes(32), [launch] * 6, [certify] * 6)
    assert outcomes.count("first") == 1, outcomes
    assert sum(o.startswith("refused: this certify evidence") for o in outcomes) == 5


def test_purge_forgets_expired_redemptions_too(db: TTPDatabase) -> None:
    digest, launch, certify = secrets.token_bytes(32), str(uuid.uuid4()), secrets.token_hex(32)
    db.record_attestation(_record(launch), token_digest=digest, expires_at=100,
                          certify_digest=certify)
    assert db.purge_used_tokens(now=200) >= 1
    other = str(uuid.uuid4())
    assert db.record_attestation(_record(other), token_digest=digest, expires_at=300,
                                 certify_digest=certify) is None


def test_upgrade_binds_tokens_redeemed_before_to_their_launch(tmp_path) -> None:
    path = tmp_path / "ttp.sqlite"
    url = f"sqlite:///{path}"
    db_sync(url, "0002")
    launch, digest = str(uuid.uuid4()), secrets.token_bytes(32)
    with sqlite3.connect(path) as connection:
        connection.execute(
            "INSERT INTO attestations (id, requester, host, launch_id, verdict, "
            "evidence_digests) VALUES ('a1', 'r', 'h', ?, 'trusted', '{}')", (launch,))
        connection.execute("INSERT INTO used_tokens VALUES (?, 'a1', ?)",
                           (digest.hex(), EXPIRES))
    db_sync(url)
    assert db_version(url) >= "0003"
    database = TTPDatabase(url)
    try:
        assert _redeem(database, digest, launch)[1] == "a1"
        with pytest.raises(TokenAlreadyUsed):
            _redeem(database, digest, str(uuid.uuid4()))
    finally:
        database.dispose()
    _downgrade(url, "0002")
    with sqlite3.connect(path) as connection:
        columns = [row[1] for row in connection.execute("PRAGMA table_info(used_tokens)")]
    assert "launch_id" not in columns


def _downgrade(url: str, revision: str) -> None:
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine

    from trusted_launch.ttp.db.migration import MIGRATIONS_DIR
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, revision)
    finally:
        engine.dispose()


@pytest.mark.swtpm
def test_real_host_re_attests_its_launch_with_fresh_evidence(
        ttp_server: TTPServer, attested_host) -> None:  # noqa: F811
    body, nonce, _ = _attestation(ttp_server, attested_host, PROFILE["name"])
    first = ttp_server.request("POST", "/v1/attestations", json=body)
    assert first.status_code == 200, first.text
    device = attested_host[0].device
    bind_key = bindkeys.create_bind_key(device, "ecc")  # a fresh key and certify
    attest, signature = bindkeys.certify(device, bind_key, certify_qualifying_data(
        body["token"], bind_key.name, body["launch_id"]))
    fresh = dict(body, bind_key_public=base64.b64encode(bind_key.public).decode(),
                 certify_info=base64.b64encode(attest).decode(),
                 certify_signature=base64.b64encode(signature).decode())
    again = ttp_server.request("POST", "/v1/attestations", json=fresh)
    assert again.status_code == 200, again.text
    released = open_from_bind_key(
        base64.b64decode(again.json()["released"]),
        aad=release_aad(body["launch_id"], bind_key.name),
        ecdh_zgen=lambda x, y: bindkeys.ecdh_zgen(device, bind_key, (x, y)))
    assert released.nonce == nonce
    audit = ttp_server.admin("GET", f"/v1/attestations/{again.json()['attestation_id']}")
    assert audit.json()["reason"].startswith(f"re-attestation of launch {body['launch_id']}")
    assert first.json()["attestation_id"] in audit.json()["reason"]
    assert "re-attests launch" in ttp_server.log()
    replayed = ttp_server.request("POST", "/v1/attestations", json=fresh)
    assert replayed.json()["error"]["check"] == "token_replayed"
    assert "certify evidence" in replayed.json()["error"]["reason"]
