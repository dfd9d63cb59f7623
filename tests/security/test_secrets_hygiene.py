"""N and the image key appear in no log, no database row, no exception text, no API answer.

Several full launches (accepted and refused, with and without an image key)
run against the shared TTP, whose log is written at DEBUG, while the host side
logs at DEBUG into pytest's capture. Then every place a secret could leak is
searched for every encoding of every secret.
"""

from __future__ import annotations

import logging
import secrets
import time
import uuid

import pytest
from sqlalchemy import MetaData, create_engine, select

from tests.fixtures.secrets_scan import encodings, leaks
from trusted_launch.client.ttp_keys import fetch_ttp_key
from trusted_launch.compute.errors import ImageDigestMismatch, LaunchRefused
from trusted_launch.compute.launch import check_image_digest
from trusted_launch.crypto.digest import digest_file
from trusted_launch.crypto.token import LaunchToken, seal_token
from trusted_launch.sandbox.hosts import ttp_client

pytestmark = pytest.mark.swtpm


def _database_dump(ttp) -> list[bytes]:
    """Every cell of every table of the TTP's SQLite database, as bytes."""
    engine = create_engine(f"sqlite:///{ttp.directory / 'ttp.sqlite'}")
    metadata = MetaData()
    metadata.reflect(engine)
    cells: list[bytes] = []
    try:
        with engine.connect() as connection:
            for table in metadata.sorted_tables:
                for row in connection.execute(select(table)):
                    cells.extend(value if isinstance(value, bytes) else str(value).encode()
                                 for value in row)
    finally:
        engine.dispose()
    assert cells, "the database dump is empty: the search below would prove nothing"
    return cells


def test_no_secret_in_logs_database_answers_or_errors(hosts, ttp, tenant, image, caplog):
    caplog.set_level(logging.DEBUG)
    image_key = secrets.token_bytes(16)  # an image key (16 bytes keeps the token <= 255)
    nonces: list[bytes] = []
    texts: list[str] = []  # exception texts and API answers
    attestations: list[str] = []
    trusted, untrusted = hosts["trusted"].runner, hosts["untrusted"].runner

    def launch(runner, token: str, launch_id: str | None = None) -> None:
        try:
            pending = runner.attest(ttp_client(ttp), token=token,
                                    launch_id=launch_id or str(uuid.uuid4()))
            attestations.append(pending.attestation_id)
            released = runner.open(pending)
            texts.append(repr(released))
            check_image_digest(released.image_digest, b"\0" * 64)
        except LaunchRefused as exc:
            texts.extend([str(exc), repr(exc), exc.reason])

    for runner, profile, key in ((trusted, "high", image_key), (untrusted, "low", None),
                                 (untrusted, "high", None), (trusted, "medium", None)):
        token, nonce = tenant(profile, image_key=key)
        nonces.append(nonce)
        launch(runner, token)
    launch(trusted, token)  # replayed
    expired_nonce = secrets.token_bytes(32)
    nonces.append(expired_nonce)
    key_id, public_key = fetch_ttp_key(ttp.url, ca_file=str(ttp.ca_file))
    launch(trusted, seal_token(LaunchToken(nonce=expired_nonce, profile="high",
                                           image_digest=digest_file(image, "sha512"),
                                           expires_at=int(time.time()) - 5),
                               public_key, key_id))
    token, nonce = tenant("high")
    nonces.append(nonce)
    _, body = trusted.evidence(token=token, launch_id=str(uuid.uuid4()))
    answer = ttp.request("POST", "/v1/attestations", json=dict(body, launch_id="moved"))
    texts.append(answer.text)
    texts.extend(ttp.admin("GET", f"/v1/attestations/{a}").text for a in attestations)
    assert len(attestations) == 3  # three accepted launches (the image check refuses them)
    assert any("ImageDigestMismatch" in t or "image_digest_mismatch" in t for t in texts)

    secret_list = [*nonces, image_key]
    assert leaks(ttp.log(), secret_list) == []
    assert "INSERT INTO used_tokens" in ttp.log()  # the server logged its SQL too
    host_log = "\n".join(f"{r.name} {r.getMessage()} {r.exc_text or ''}"
                         for r in caplog.records)
    assert caplog.records and leaks(host_log, secret_list) == []
    assert leaks("\n".join(texts), secret_list) == []
    assert [cell for cell in _database_dump(ttp) if leaks(cell, secret_list)] == []


def test_the_search_finds_a_planted_secret():
    """Control: the search above does see each encoding of a secret."""
    secret = secrets.token_bytes(32)
    for form in encodings(secret):
        assert leaks(b"log line: " + form + b" end", [secret])
    assert leaks(f"nonce={secret.hex()}", [secret])
    assert leaks(str(ImageDigestMismatch("x")), [secret]) == []
