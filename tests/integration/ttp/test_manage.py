"""``trusted-launch-ttp-manage`` and the WSGI factory, on a private SQLite database."""

from __future__ import annotations

import json
import pathlib
import stat
import subprocess

import pytest
import webob
import yaml

from tests.conftest import EVENTLOG_DIR
from tests.fixtures.ttp import BIN_DIR, CertificateAuthority, write_ttp_config
from trusted_launch.ttp.keystore import TokenKeyStore
from trusted_launch.ttp.wsgi import load_config, make_app

EXAMPLES = pathlib.Path(__file__).resolve().parents[3] / "examples" / "profiles"


def _manage(config: pathlib.Path | None, *args: str) -> subprocess.CompletedProcess:
    prefix = ["--config-file", str(config)] if config else []
    return subprocess.run([str(BIN_DIR / "trusted-launch-ttp-manage"), *prefix, *args],
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture
def config(tmp_path: pathlib.Path, ttp_test_ca: CertificateAuthority) -> pathlib.Path:
    cert, key = ttp_test_ca.issue("ttp-manage")
    return write_ttp_config(tmp_path, database_url=f"sqlite:///{tmp_path / 'ttp.sqlite'}",
                            cert=cert, key=key, admin_token="admin-secret",
                            ek_ca_files=[ttp_test_ca.cert_file])


def test_db_sync_creates_schema_ca_and_first_key_once(config: pathlib.Path) -> None:
    first = _manage(config, "db", "sync")
    assert first.returncode == 0, first.stderr
    assert "created attestation CA" in first.stdout and "created token key" in first.stdout
    second = _manage(config, "db", "sync")
    assert second.returncode == 0 and "created" not in second.stdout
    directory = config.parent
    for private in [directory / "ca" / "ak-ca.key", *(directory / "keys").iterdir()]:
        assert stat.S_IMODE(private.stat().st_mode) == 0o600, private
    assert "exists" in _manage(config, "ca", "init").stdout


def test_keys_rotate_drops_keys_after_the_overlap(tmp_path: pathlib.Path) -> None:
    store = TokenKeyStore(tmp_path / "keys", overlap=100)
    first = store.rotate(now=1000)
    second = store.rotate(now=1050)
    assert [k.key_id for k in store.keys(now=1100)] == [second, first]
    assert [k.key_id for k in store.keys(now=1151)] == [second]
    third = store.rotate(now=1200)
    assert not (tmp_path / "keys" / f"token-{first}.key").exists()
    assert set(store.private_keys(now=1200)) == {third, second}


def test_keys_without_a_current_key_fail_cleanly(config: pathlib.Path) -> None:
    listed = _manage(config, "keys", "list")
    assert listed.returncode == 1
    assert "no current token key" in listed.stderr and "Traceback" not in listed.stderr


def test_profile_set_list_and_bad_file(config: pathlib.Path, tmp_path: pathlib.Path) -> None:
    assert _manage(config, "db", "sync").returncode == 0
    added = _manage(config, "profile", "set", "low", str(EXAMPLES / "low.yaml"))
    assert added.returncode == 0, added.stderr
    assert "low" in _manage(config, "profile", "list").stdout
    mismatch = _manage(config, "profile", "set", "other", str(EXAMPLES / "low.yaml"))
    assert mismatch.returncode == 1 and "name" in mismatch.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nlevel: -1\n")
    refused = _manage(config, "profile", "set", "bad", str(bad))
    assert refused.returncode == 1 and "level" in refused.stderr


def test_profile_draft_from_a_real_event_log() -> None:
    drafted = _manage(None, "profile", "draft", "--eventlog",
                      str(EVENTLOG_DIR / "secureboot_binary_bios_measurements"),
                      "--name", "fleet-a", "--level", "40")
    assert drafted.returncode == 0, drafted.stderr
    document = yaml.safe_load(drafted.stdout)
    assert document["name"] == "fleet-a" and document["level"] == 40
    assert document["require_secure_boot"] is True
    assert set(document["pcrs"]["sha256"]) == {str(i) for i in range(8)}


def test_profile_draft_of_a_broken_log_is_one_line(tmp_path: pathlib.Path) -> None:
    broken = tmp_path / "log"
    broken.write_bytes((EVENTLOG_DIR / "secureboot_binary_bios_measurements").read_bytes()[:77])
    drafted = _manage(None, "profile", "draft", "--eventlog", str(broken), "--name", "x",
                      "--level", "1")
    assert drafted.returncode == 1 and "offset" in drafted.stderr
    assert "Traceback" not in drafted.stderr


def test_make_app_serves_in_process(config: pathlib.Path) -> None:
    assert _manage(config, "db", "sync").returncode == 0
    app = make_app(load_config([str(config)]))
    keys = webob.Request.blank("/v1/keys").get_response(app)
    assert keys.status_int == 200 and len(json.loads(keys.body)["keys"]) == 1
    put = webob.Request.blank("/v1/profiles/inproc", method="PUT",
                              body=b'{"name": "inproc", "level": 3}',
                              content_type="application/json",
                              headers={"X-Auth-Token": "admin-secret"}).get_response(app)
    assert put.status_int == 201, put.body
    assert json.loads(webob.Request.blank("/v1/keys").get_response(app).body)["profiles"] == [
        "inproc"]
    app.db.dispose()


def test_keys_are_published_while_the_database_is_unavailable(config: pathlib.Path) -> None:
    """Token keys live in files: a database outage drops only the profile names."""
    import sqlite3

    assert _manage(config, "db", "sync").returncode == 0
    app = make_app(load_config([str(config)]))
    with sqlite3.connect(config.parent / "ttp.sqlite") as database:
        database.execute("DROP TABLE profile_revision")
    keys = webob.Request.blank("/v1/keys").get_response(app)
    assert keys.status_int == 200, keys.body
    body = json.loads(keys.body)
    assert len(body["keys"]) == 1 and "profiles" not in body
    app.db.dispose()


def test_db_sync_bootstraps_the_profile_directory(tmp_path: pathlib.Path,
                                                  ttp_test_ca: CertificateAuthority) -> None:
    cert, key = ttp_test_ca.issue("ttp-bootstrap")
    config = write_ttp_config(tmp_path, database_url=f"sqlite:///{tmp_path / 'ttp.sqlite'}",
                              cert=cert, key=key, admin_token="x",
                              ek_ca_files=[ttp_test_ca.cert_file], profile_dir=EXAMPLES)
    synced = _manage(config, "db", "sync")
    assert synced.returncode == 0, synced.stderr
    assert {"added profile low", "added profile medium", "added profile high"} <= set(
        synced.stdout.splitlines())
    listed = _manage(config, "profile", "list").stdout.split()
    assert listed.index("low") < listed.index("medium") < listed.index("high")
    assert "added profile" not in _manage(config, "db", "sync").stdout


def test_activation_challenge_expires(tmp_path: pathlib.Path) -> None:
    import hashlib

    from trusted_launch.ttp.db.api import HostConflict, TTPDatabase
    from trusted_launch.ttp.db.migration import db_sync
    url = f"sqlite:///{tmp_path / 'ttp.sqlite'}"
    db_sync(url)
    db = TTPDatabase(url)
    digest = hashlib.sha256(b"secret").hexdigest()
    pending = dict(name="h1", ek_cert_fingerprint="ek-a", ek_public="e", ak_public="a",
                   ak_name="00", credential_digest=digest, challenge_expires_at=100)
    db.save_pending_host(**pending)
    assert db.activate_host("h1", digest, now=101) is None  # too late
    db.save_pending_host(**pending)
    assert db.activate_host("h1", digest, now=100).state == "active"
    with pytest.raises(HostConflict):
        db.save_pending_host(**{**pending, "ek_cert_fingerprint": "ek-b"})
    assert db.get_host("h1").credential_digest is None  # the secret digest is spent
    db.dispose()


def test_profile_draft_as_the_readme_writes_it(tmp_path: pathlib.Path) -> None:
    """``profile draft --eventlog LOG`` alone: a reviewable draft that profile set accepts."""
    drafted = _manage(None, "profile", "draft", "--eventlog",
                      str(EVENTLOG_DIR / "secureboot_binary_bios_measurements"))
    assert drafted.returncode == 0 and drafted.stderr == "", drafted.stderr
    assert drafted.stdout.startswith("# Drafted from secureboot_binary_bios_measurements")
    document = yaml.safe_load(drafted.stdout)
    assert (document["name"], document["level"]) == ("draft", 20)
    not_a_log = _manage(None, "profile", "draft", "--eventlog", str(EXAMPLES / "low.yaml"))
    assert not_a_log.returncode == 1 and not_a_log.stderr.count("\n") == 1
    assert "low.yaml: event log at offset 0: not a TCG event log" in not_a_log.stderr
