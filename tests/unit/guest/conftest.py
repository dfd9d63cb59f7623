"""A real guest agent in a thread, with a real nonce file and a real SSH host key."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from trusted_launch.crypto.nonce import encode_nonce
from trusted_launch.guest.agent import ChallengeServer
from trusted_launch.guest.identity import GuestIdentity, load_identity

SERVER_ID = "6f1c1c43-5f53-4e4c-9a57-0d3f1c9b2a10"


def ssh_host_key_line() -> str:
    """An OpenSSH public key line for a fresh Ed25519 key."""
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH,
                            serialization.PublicFormat.OpenSSH).decode() + " root@vm"


def write_ssh_host_key(path) -> str:
    """Write an OpenSSH ``.pub`` for a fresh Ed25519 key; return the line."""
    line = ssh_host_key_line()
    path.write_text(line + "\n")
    return line


@dataclass
class RunningAgent:
    address: str
    nonce: bytes
    identity: GuestIdentity
    nonce_file: str
    ssh_key_file: str


def serve_in_thread(server) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    return thread


@pytest.fixture
def config_drive(tmp_path):
    """A config-drive-like tree: trusted_launch/nonce and openstack/latest/meta_data.json."""
    nonce = os.urandom(32)
    (tmp_path / "trusted_launch").mkdir()
    (tmp_path / "trusted_launch" / "nonce").write_bytes(encode_nonce(nonce))
    (tmp_path / "openstack" / "latest").mkdir(parents=True)
    (tmp_path / "openstack" / "latest" / "meta_data.json").write_text(
        json.dumps({"uuid": SERVER_ID, "name": "vm"}))
    write_ssh_host_key(tmp_path / "ssh_host_ed25519_key.pub")
    return tmp_path, nonce


@pytest.fixture
def agent(config_drive):
    root, nonce = config_drive
    identity = load_identity(nonce_file=root / "trusted_launch" / "nonce", server_id=SERVER_ID,
                             ssh_host_key=root / "ssh_host_ed25519_key.pub")
    server = ChallengeServer(("127.0.0.1", 0), identity)
    thread = serve_in_thread(server)
    yield RunningAgent(f"127.0.0.1:{server.server_address[1]}", nonce, identity,
                       str(root / "trusted_launch" / "nonce"),
                       str(root / "ssh_host_ed25519_key.pub"))
    server.shutdown()
    server.server_close()
    thread.join()
