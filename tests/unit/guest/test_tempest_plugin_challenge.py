"""The Tempest plugin's tenant-side challenge (a process, as in the tenant namespace)
against a real guest agent in a thread."""

from __future__ import annotations

import os
import socket

import pytest

from trusted_launch.crypto.digest import ImageDigest
from trusted_launch.crypto.nonce import encode_nonce
from trusted_launch_tempest_plugin import tenant

from .conftest import SERVER_ID


def _nonce_file(path, nonce: bytes) -> str:
    path.write_bytes(encode_nonce(nonce))
    path.chmod(0o600)
    return str(path)


def test_the_right_nonce_is_verified(agent):
    answer = tenant.challenge(agent.address, SERVER_ID, agent.nonce_file, timeout=10)
    assert answer["verified"] is True
    assert answer["server_id"] == SERVER_ID
    assert answer["ssh_host_key_fingerprint"].startswith("SHA256:")
    assert agent.nonce.hex() not in str(answer)


def test_another_nonce_is_refused_by_its_mac(agent, tmp_path):
    other = _nonce_file(tmp_path / "other", os.urandom(32))
    with pytest.raises(tenant.ChallengeFailed, match=r"MAC mismatch"):
        tenant.challenge(agent.address, SERVER_ID, other, timeout=10)


def test_an_agent_that_does_not_answer_is_named(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    nonce = _nonce_file(tmp_path / "n", os.urandom(32))
    with pytest.raises(tenant.ChallengeFailed, match=rf"cannot reach the VM agent at "
                                                     rf"127.0.0.1:{port}"):
        tenant.challenge(f"127.0.0.1:{port}", SERVER_ID, nonce, timeout=5)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed again: nothing listens there


def test_waiting_for_the_right_nonce_returns_the_answer(agent):
    answer = tenant.wait_for_proof(agent.address, SERVER_ID, agent.nonce_file, namespace="",
                                   answer_timeout=60, challenge_timeout=10,
                                   console=lambda: "")
    assert answer["verified"] is True


def test_waiting_for_another_nonce_fails_at_the_first_answer(agent, tmp_path):
    other = _nonce_file(tmp_path / "other", os.urandom(32))
    with pytest.raises(tenant.ChallengeFailed, match=r"MAC mismatch") as raised:
        tenant.wait_for_proof(agent.address, SERVER_ID, other, namespace="",
                              answer_timeout=600, challenge_timeout=10, console=lambda: "")
    assert not isinstance(raised.value, tenant.AnswerTimeout)


def test_a_wait_for_an_agent_that_never_answers_ends_and_says_what_it_waited_for(tmp_path):
    port = _closed_port()
    nonce = _nonce_file(tmp_path / "n", os.urandom(32))
    with pytest.raises(tenant.AnswerTimeout) as raised:
        tenant.wait_for_proof(f"127.0.0.1:{port}", SERVER_ID, nonce, namespace="",
                              answer_timeout=2, challenge_timeout=1, poll=0.2,
                              console=lambda: "login: ")
    message = str(raised.value)
    assert f"server {SERVER_ID}: its agent at 127.0.0.1:{port} did not prove" in message
    assert "answer_timeout 2 s" in message
    assert f"cannot reach the VM agent at 127.0.0.1:{port}" in message
    assert message.endswith("console tail:\nlogin: ")


def test_a_kernel_panic_on_the_console_ends_the_wait_at_once(tmp_path):
    panic = "Kernel panic - not syncing: IO-APIC + timer doesn't work!"
    nonce = _nonce_file(tmp_path / "n", os.urandom(32))
    with pytest.raises(tenant.AnswerTimeout) as raised:
        tenant.wait_for_proof(f"127.0.0.1:{_closed_port()}", SERVER_ID, nonce, namespace="",
                              answer_timeout=3600, challenge_timeout=1,
                              console=lambda: panic)
    message = str(raised.value)
    assert "its console shows a kernel panic; challenges: 1)" in message
    assert message.endswith(panic)


def test_glance_digest_is_the_stored_hash_and_a_missing_one_is_refused():
    value = "ab" * 64
    assert tenant.glance_digest({"id": "i", "os_hash_algo": "sha512",
                                 "os_hash_value": value}) == ImageDigest.parse(
        f"sha512:{value}")
    with pytest.raises(ValueError, match="image i has no os_hash_value"):
        tenant.glance_digest({"id": "i", "os_hash_algo": None, "os_hash_value": None})


def test_the_trusted_properties_name_profile_ttp_and_token():
    assert tenant.trusted_metadata("high", "https://ttp", "tok") == {
        "trusted_sp": "high", "trusted_ttp": "https://ttp", "trusted_token": "tok"}
