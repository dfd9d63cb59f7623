"""The guest agent's HTTP behaviour, identity loading and ``trusted-launch-guest``."""

from __future__ import annotations

import base64
import http.client
import json
import logging
import os
import shutil
import subprocess

import pytest

from tests.unit.guest.conftest import SERVER_ID
from trusted_launch.cmd import guest as guest_cmd
from trusted_launch.crypto.vm_challenge import challenge_mac
from trusted_launch.guest import identity as identity_mod
from trusted_launch.guest.agent import MAX_BODY_BYTES
from trusted_launch.guest.identity import GuestSetupError, load_identity, server_id_from_meta_data


def post(address: str, body: bytes | None, headers: dict | None = None,
         path: str = "/v1/challenge") -> tuple[int, dict]:
    host, port = address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    connection.putrequest("POST", path)
    for name, value in (headers or {}).items():
        connection.putheader(name, value)
    if body is not None and "Content-Length" not in (headers or {}):
        connection.putheader("Content-Length", str(len(body)))
    connection.endheaders(body)
    response = connection.getresponse()
    status, payload = response.status, json.loads(response.read())
    connection.close()
    return status, payload


def challenge_body(challenge: bytes, server_id: str = SERVER_ID) -> bytes:
    text = base64.urlsafe_b64encode(challenge).decode().rstrip("=")
    return json.dumps({"challenge": text, "server_id": server_id}).encode()


def test_answer_is_the_mac_over_challenge_id_and_fingerprint(agent):
    challenge = os.urandom(16)
    status, answer = post(agent.address, challenge_body(challenge))
    assert status == 200
    mac = base64.urlsafe_b64decode(answer["mac"] + "=")
    assert mac == challenge_mac(agent.nonce, challenge, SERVER_ID,
                                answer["ssh_host_key_fingerprint"])


@pytest.mark.parametrize("body,reason", [
    (challenge_body(os.urandom(15)), "16-64 bytes"),
    (challenge_body(os.urandom(65)), "16-64 bytes"),
    (challenge_body(os.urandom(32), "other-id"), "not this server's id"),
    (challenge_body(os.urandom(32), ""), "non-empty string"),
    (json.dumps({"challenge": "*bad*", "server_id": SERVER_ID}).encode(), "base64url"),
    (json.dumps({"challenge": 5, "server_id": SERVER_ID}).encode(), "base64url"),
    (json.dumps([1]).encode(), "JSON object"),
    (b"{not json", "not JSON"),
], ids=["short", "long", "other-id", "empty-id", "bad-b64", "number", "array", "not-json"])
def test_bad_requests_get_400_with_a_reason(agent, body, reason):
    status, answer = post(agent.address, body)
    assert status == 400
    assert reason in answer["error"]


def test_oversized_body_gets_413(agent):
    status, answer = post(agent.address, b"x" * (MAX_BODY_BYTES + 1))
    assert status == 413 and "larger than" in answer["error"]


def test_oversized_declared_length_is_refused_without_reading(agent):
    status, _ = post(agent.address, b"", headers={"Content-Length": "999999999"})
    assert status == 413


def test_missing_content_length_gets_411(agent):
    status, answer = post(agent.address, None)
    assert status == 411 and "Content-Length" in answer["error"]


def test_unknown_paths_get_404(agent):
    assert post(agent.address, challenge_body(os.urandom(32)), path="/v1/other")[0] == 404


def test_status_shows_no_secret(agent):
    host, port = agent.address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    connection.request("GET", "/v1/status")
    response = connection.getresponse()
    text = response.read().decode()
    assert response.status == 200
    assert json.loads(text)["server_id"] == SERVER_ID
    assert agent.nonce.hex() not in text


def test_logs_never_contain_the_nonce(agent, caplog):
    caplog.set_level(logging.DEBUG)
    post(agent.address, challenge_body(os.urandom(32)))
    post(agent.address, challenge_body(os.urandom(32), "other-id"))
    assert "POST /v1/challenge" in caplog.text
    for form in (agent.nonce.hex(), base64.b64encode(agent.nonce).decode()):
        assert form not in caplog.text
    assert agent.nonce.hex() not in repr(agent.identity)


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen missing")
def test_fingerprint_agrees_with_ssh_keygen(agent):
    out = subprocess.run(["ssh-keygen", "-lf", agent.ssh_key_file], check=True,
                         capture_output=True, text=True).stdout
    assert out.split()[1] == agent.identity.ssh_host_key_fingerprint


def test_server_id_from_meta_data(config_drive, tmp_path):
    root, _ = config_drive
    assert server_id_from_meta_data(root / "openstack/latest/meta_data.json") == SERVER_ID
    bad = tmp_path / "bad.json"
    for content in ("{}", "[]", "not json", '{"uuid": 5}'):
        bad.write_text(content)
        with pytest.raises(GuestSetupError, match=r"bad\.json"):
            server_id_from_meta_data(bad)
    with pytest.raises(GuestSetupError, match="absent"):
        server_id_from_meta_data(tmp_path / "absent.json")


def test_load_identity_errors(config_drive, tmp_path):
    root, _ = config_drive
    (tmp_path / "short").write_text("abcd")
    with pytest.raises(GuestSetupError, match="launch nonce") as excinfo:
        load_identity(nonce_file=tmp_path / "short", server_id=SERVER_ID,
                      ssh_host_key=root / "ssh_host_ed25519_key.pub")
    assert "abcd" not in str(excinfo.value)
    with pytest.raises(GuestSetupError, match="launch nonce"):
        load_identity(nonce_file=tmp_path / "absent", server_id=SERVER_ID,
                      ssh_host_key=root / "ssh_host_ed25519_key.pub")
    (tmp_path / "bad.pub").write_text("ssh-ed25519 !!!\n")
    with pytest.raises(GuestSetupError, match="SSH host key"):
        load_identity(nonce_file=root / "trusted_launch/nonce", server_id=SERVER_ID,
                      ssh_host_key=tmp_path / "bad.pub")


def test_defaults_find_the_config_drive(config_drive, monkeypatch):
    root, _ = config_drive
    monkeypatch.setattr(identity_mod, "CONFIG_DRIVE_MOUNTS", ("/nonexistent", str(root)))
    assert identity_mod.default_nonce_file() == root / "trusted_launch" / "nonce"
    assert identity_mod.default_meta_data() == root / "openstack/latest/meta_data.json"
    monkeypatch.setattr(identity_mod, "CONFIG_DRIVE_MOUNTS", ("/nonexistent",))
    assert identity_mod.default_nonce_file() == identity_mod.NONCE_FALLBACK


def test_cli_status_uses_meta_data(config_drive, capsys):
    root, nonce = config_drive
    status = guest_cmd.main(["--status", "--nonce-file", str(root / "trusted_launch/nonce"),
                             "--meta-data", str(root / "openstack/latest/meta_data.json"),
                             "--ssh-host-key", str(root / "ssh_host_ed25519_key.pub")])
    out = capsys.readouterr().out
    assert status == 0
    assert SERVER_ID in out and "SHA256:" in out
    assert nonce.hex() not in out


def test_cli_reports_setup_errors_in_one_line(tmp_path, capsys):
    status = guest_cmd.main(["--status", "--nonce-file", str(tmp_path / "absent"),
                             "--server-id", "x", "--ssh-host-key", str(tmp_path / "k.pub")])
    err = capsys.readouterr().err
    assert status == 1 and err.count("\n") == 1 and "launch nonce" in err


@pytest.mark.parametrize("text,expected", [
    ("127.0.0.1:8950", ("127.0.0.1", 8950)), ("[::1]:80", ("::1", 80)), (":7", ("0.0.0.0", 7)),
])
def test_parse_listen(text, expected):
    assert guest_cmd.parse_listen(text) == expected


@pytest.mark.parametrize("text", ["8950", "host:x", "host:70000"])
def test_parse_listen_rejects(text):
    with pytest.raises(ValueError, match="HOST:PORT"):
        guest_cmd.parse_listen(text)
