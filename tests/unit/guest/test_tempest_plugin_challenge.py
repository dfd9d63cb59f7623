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
