"""Mutual authentication against the real agent over HTTP, and SSH key installation."""

from __future__ import annotations

import base64
import json
import os
import stat

import pytest

from tests.unit.guest.conftest import SERVER_ID, serve_in_thread, ssh_host_key_line
from tests.unit.guest.test_agent import post
from trusted_launch.client.errors import VMVerificationFailed
from trusted_launch.client.mutual import mutual_authenticate
from trusted_launch.crypto.vm_challenge import mutual_key, mutual_mac, session_key, session_mac
from trusted_launch.guest.agent import ChallengeServer
from trusted_launch.guest.errors import BadRequest
from trusted_launch.guest.identity import load_identity
from trusted_launch.guest.mutual import MutualAuthenticator


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.fixture
def vm(config_drive, tmp_path):
    """(address, N, identity, authorized_keys path) of an agent that may install SSH keys."""
    root, nonce = config_drive
    identity = load_identity(nonce_file=root / "trusted_launch" / "nonce", server_id=SERVER_ID,
                             ssh_host_key=root / "ssh_host_ed25519_key.pub")
    keys = tmp_path / "home" / ".ssh" / "authorized_keys"
    server = ChallengeServer(("127.0.0.1", 0), identity,
                             mutual=MutualAuthenticator(identity, authorized_keys=keys))
    thread = serve_in_thread(server)
    yield f"127.0.0.1:{server.server_address[1]}", nonce, identity, keys
    server.shutdown()
    server.server_close()
    thread.join()


def send(address: str, path: str, body: dict) -> tuple[int, dict]:
    return post(address, json.dumps(body).encode(), path=path)


def start(address: str, c1: bytes = b"\x11" * 32) -> dict:
    status, answer = send(address, "/v1/mutual/start", {"server_id": SERVER_ID, "c1": b64(c1)})
    assert status == 200, answer
    return answer


def finish_body(nonce: bytes, c1: bytes, answer: dict) -> dict:
    c2 = unb64(answer["c2"])
    mac = mutual_mac(mutual_key(nonce), "client", c1, c2, SERVER_ID,
                     answer["ssh_host_key_fingerprint"])
    return {"c2": answer["c2"], "mac_client": b64(mac)}


def open_session(address: str, nonce: bytes) -> tuple[bytes, bytes]:
    """(session id, session key) after a correct manual exchange."""
    c1 = os.urandom(32)
    answer = start(address, c1)
    status, finished = send(address, "/v1/mutual/finish", finish_body(nonce, c1, answer))
    assert status == 200, finished
    c2 = unb64(answer["c2"])
    return c2, session_key(mutual_key(nonce), c1, c2)


def authorize_body(session: tuple[bytes, bytes], counter: int, line: str) -> dict:
    session_id, key = session
    mac = session_mac(key, "authorize-ssh-key", session_id, counter, line.encode())
    return {"session": b64(session_id), "counter": counter, "ssh_public_key": line,
            "mac": b64(mac)}


def test_mutual_authentication_then_ssh_key_installed(vm):
    address, nonce, identity, keys = vm
    session = mutual_authenticate(address, SERVER_ID, nonce)
    assert session.vm.ssh_host_key_fingerprint == identity.ssh_host_key_fingerprint
    assert not keys.exists()
    tenant_key = ssh_host_key_line()
    fingerprint = session.authorize_ssh_key(tenant_key)
    assert keys.read_text() == tenant_key + "\n"
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600
    assert session.authorize_ssh_key(tenant_key) == fingerprint  # idempotent, counter 2
    assert keys.read_text().count("ssh-ed25519") == 1


def test_client_rejects_a_vm_that_does_not_know_n(vm):
    address, _, _, keys = vm
    with pytest.raises(VMVerificationFailed, match="does not prove knowledge"):
        mutual_authenticate(address, SERVER_ID, os.urandom(32))
    assert not keys.exists()


def test_vm_rejects_a_client_with_the_wrong_n_and_consumes_the_exchange(vm):
    address, nonce, _, keys = vm
    c1 = os.urandom(32)
    answer = start(address, c1)
    # the VM's own proof verifies for the right N ...
    assert unb64(answer["mac_vm"]) == mutual_mac(mutual_key(nonce), "vm", c1,
                                                 unb64(answer["c2"]), SERVER_ID,
                                                 answer["ssh_host_key_fingerprint"])
    status, refused = send(address, "/v1/mutual/finish", finish_body(os.urandom(32), c1, answer))
    assert status == 403 and "does not prove knowledge" in refused["error"]
    # ... but the exchange is gone: even the right answer is now refused
    status, again = send(address, "/v1/mutual/finish", finish_body(nonce, c1, answer))
    assert status == 403 and "no open exchange" in again["error"]
    assert not keys.exists()


def test_replayed_finish_is_rejected(vm):
    address, nonce, _, _ = vm
    c1 = os.urandom(32)
    body = finish_body(nonce, c1, start(address, c1))
    assert send(address, "/v1/mutual/finish", body)[0] == 200
    status, answer = send(address, "/v1/mutual/finish", body)
    assert status == 403 and "already finished" in answer["error"]


def test_tampered_session_message_is_rejected_and_nothing_written(vm):
    address, nonce, _, keys = vm
    session = open_session(address, nonce)
    body = authorize_body(session, 1, ssh_host_key_line())
    tampered = {**body, "ssh_public_key": ssh_host_key_line()}  # attacker's key, same MAC
    status, answer = send(address, "/v1/mutual/authorized-keys", tampered)
    assert status == 403 and "MAC does not verify" in answer["error"]
    forged_session = {**body, "session": b64(os.urandom(32))}
    assert send(address, "/v1/mutual/authorized-keys", forged_session)[0] == 403
    assert not keys.exists()


def test_replayed_session_message_is_rejected(vm):
    address, nonce, _, keys = vm
    session = open_session(address, nonce)
    line = ssh_host_key_line()
    body = authorize_body(session, 1, line)
    assert send(address, "/v1/mutual/authorized-keys", body)[0] == 200
    keys.unlink()  # a replay must not re-create it
    status, answer = send(address, "/v1/mutual/authorized-keys", body)
    assert status == 403 and "replayed" in answer["error"]
    assert not keys.exists()


def test_vm_confirms_with_a_session_mac(vm):
    address, nonce, _, _ = vm
    session = open_session(address, nonce)
    line = ssh_host_key_line()
    status, answer = send(address, "/v1/mutual/authorized-keys", authorize_body(session, 5, line))
    assert status == 200 and answer["counter"] == 5
    assert unb64(answer["mac"]) == session_mac(session[1], "ssh-key-authorized", session[0], 5,
                                               answer["fingerprint"].encode())


@pytest.mark.parametrize("line", [
    'command="sh" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ',
    "ssh-ed25519 AAAA\nssh-rsa AAAA",
    "ssh-dss AAAAB3NzaC1kc3M",
    "ssh-ed25519 not-base64!",
])
def test_authenticated_but_unsafe_key_lines_are_refused(vm, line):
    address, nonce, _, keys = vm
    status, answer = send(address, "/v1/mutual/authorized-keys",
                          authorize_body(open_session(address, nonce), 1, line))
    assert status == 400 and "ssh_public_key" in answer["error"]
    assert not keys.exists()


def test_key_installation_disabled_by_default(agent):
    session = mutual_authenticate(agent.address, SERVER_ID, agent.nonce)
    with pytest.raises(VMVerificationFailed, match="not enabled"):
        session.authorize_ssh_key(ssh_host_key_line())


def test_exchange_and_session_expire(config_drive):
    root, nonce = config_drive
    identity = load_identity(nonce_file=root / "trusted_launch" / "nonce", server_id=SERVER_ID,
                             ssh_host_key=root / "ssh_host_ed25519_key.pub")
    now = [1000.0]
    mutual = MutualAuthenticator(identity, exchange_ttl=10, session_ttl=20,
                                 clock=lambda: now[0])
    c1 = os.urandom(32)
    answer = mutual.start({"server_id": SERVER_ID, "c1": b64(c1)})
    now[0] += 11
    with pytest.raises(BadRequest, match="expired") as late:
        mutual.finish(finish_body(nonce, c1, answer))
    assert late.value.status == 403
    answer = mutual.start({"server_id": SERVER_ID, "c1": b64(c1)})
    mutual.finish(finish_body(nonce, c1, answer))
    now[0] += 21
    c2 = unb64(answer["c2"])
    with pytest.raises(BadRequest, match="no such session"):
        mutual.authorize_ssh_key(authorize_body(
            (c2, session_key(mutual_key(nonce), c1, c2)), 1, ssh_host_key_line()))


def test_pending_exchanges_are_bounded(config_drive):
    root, _ = config_drive
    identity = load_identity(nonce_file=root / "trusted_launch" / "nonce", server_id=SERVER_ID,
                             ssh_host_key=root / "ssh_host_ed25519_key.pub")
    mutual = MutualAuthenticator(identity, max_pending=4)
    for _ in range(10):
        mutual.start({"server_id": SERVER_ID, "c1": b64(os.urandom(32))})
    assert len(mutual._pending) == 4


@pytest.mark.parametrize(("body", "message"), [
    ({"server_id": "other", "c1": b64(b"x" * 32)}, "server_id"),
    ({"server_id": SERVER_ID, "c1": b64(b"x" * 8)}, "16-64 bytes"),
    ({"server_id": SERVER_ID, "c1": "%%%"}, "base64url"),
])
def test_bad_start_requests(agent, body, message):
    status, answer = send(agent.address, "/v1/mutual/start", body)
    assert status == 400 and message in answer["error"]


def test_cli_verify_mutual_authorizes_the_key_only_with_the_right_n(vm, tmp_path, capsys):
    from trusted_launch.cmd import cli
    address, nonce, _, keys = vm
    key_file = tmp_path / "id.pub"
    key_file.write_text(ssh_host_key_line() + "\n")
    wrong = tmp_path / "wrong-nonce"
    wrong.write_text(os.urandom(32).hex())
    argv = ["verify", "--server-id", SERVER_ID, "--address", address,
            "--authorize-ssh-key", str(key_file)]
    assert cli.main([*argv, "--nonce-file", str(wrong)]) == 1
    assert "does not prove knowledge" in capsys.readouterr().err
    assert not keys.exists()
    right = tmp_path / "nonce"
    right.write_text(nonce.hex())
    assert cli.main([*argv, "--nonce-file", str(right)]) == 0
    out = capsys.readouterr().out
    assert "mutual: the VM verified" in out and "added to the VM's authorized_keys" in out
    assert keys.read_text() == key_file.read_text()
