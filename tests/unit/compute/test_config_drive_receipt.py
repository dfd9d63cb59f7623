"""The config drive carries the TTP's receipt key beside the receipt, so the guest verifies it.

Real keys end to end: the TTP's receipt key (as the TTP creates and publishes
it), the host's copy loaded as nova-compute loads ``ttp_receipt_key_file``,
Nova's own ``ConfigDriveBuilder`` writing the drive's tree, and the guest
agent's check of what it finds there.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import secrets

import pytest

from tests.fixtures.receipts import receipt_for
from trusted_launch.compute.nonce_injection import (
    NONCE_PATH,
    RECEIPT_KEY_PATH,
    RECEIPT_PATH,
    nonce_builder_class,
)
from trusted_launch.compute.release_receipt import load_receipt_keys, receipt_key_pem
from trusted_launch.crypto.receipt import sign_receipt
from trusted_launch.guest.receipt_status import (
    RECEIPT_FILE,
    RECEIPT_KEY_FILE,
    load_receipt_status,
)
from trusted_launch.ttp.receipts import ReceiptKey

configdrive = pytest.importorskip("nova.virt.configdrive")

TOKEN_DIGEST = hashlib.sha256(b"a launch token").digest()
LAUNCH_ID = "6f1c2e3d-0000-4000-8000-00000000abcd"


class NoMetadata:
    """Nova's InstanceMetadata as the builder uses it, here without any files."""

    def metadata_for_config_drive(self):
        return iter(())


@pytest.fixture
def ttp_key(tmp_path) -> ReceiptKey:
    key = ReceiptKey(tmp_path / "ttp-keys")
    key.ensure()
    return key


@pytest.fixture
def host_key_pem(tmp_path, ttp_key) -> bytes:
    """What the driver loads from ttp_receipt_key_file (GET /v1/keys' public key)."""
    key_file = tmp_path / "ttp-receipt-key.pem"
    key_file.write_text(ttp_key.publication()["public_key"])
    return receipt_key_pem(load_receipt_keys(str(key_file), required=True))


def signed_receipt(ttp_key: ReceiptKey, nonce: bytes, **changes) -> bytes:
    receipt = receipt_for(nonce, TOKEN_DIGEST, **{"launch_id": LAUNCH_ID,
                                                  "host": "tl-compute-high", **changes})
    return json.dumps(sign_receipt(receipt, ttp_key.private_key()), sort_keys=True).encode()


def build_drive(tmp_path: pathlib.Path, nonce: bytes, receipt: bytes | None,
                receipt_key: bytes | None) -> pathlib.Path:
    builder_class = nonce_builder_class(configdrive.ConfigDriveBuilder)
    root = tmp_path / "drive"
    root.mkdir()
    builder_class(NoMetadata(), nonce, receipt, receipt_key)._write_md_files(str(root))
    return root


def test_the_paths_are_where_the_guest_agent_looks():
    assert RECEIPT_PATH == f"trusted_launch/{RECEIPT_FILE}"
    assert RECEIPT_KEY_PATH == f"trusted_launch/{RECEIPT_KEY_FILE}"


def test_guest_verifies_the_receipt_with_the_key_from_the_drive(tmp_path, ttp_key,
                                                                host_key_pem):
    nonce = secrets.token_bytes(32)
    root = build_drive(tmp_path, nonce, signed_receipt(ttp_key, nonce), host_key_pem)
    assert (root / NONCE_PATH).is_file()
    status = load_receipt_status(root / RECEIPT_PATH, root / RECEIPT_KEY_PATH, nonce)
    assert status.signature == "ok" and status.key_source == "config drive"
    assert status.bound_to_nonce and status.verified
    assert status.receipt.host == "tl-compute-high"


def test_a_tampered_receipt_on_the_drive_is_reported_failed(tmp_path, ttp_key, host_key_pem):
    nonce = secrets.token_bytes(32)
    document = json.loads(signed_receipt(ttp_key, nonce))
    other = json.loads(signed_receipt(ttp_key, nonce, host="tl-compute-evil"))
    document["payload"] = other["payload"]  # a signed payload under another's signature
    root = build_drive(tmp_path, nonce, json.dumps(document).encode(), host_key_pem)
    status = load_receipt_status(root / RECEIPT_PATH, root / RECEIPT_KEY_PATH, nonce)
    assert status.signature == "invalid" and not status.verified
    assert "does not verify" in status.problem


def test_a_receipt_signed_by_another_key_is_reported_failed(tmp_path, ttp_key, host_key_pem):
    nonce = secrets.token_bytes(32)
    impostor = ReceiptKey(tmp_path / "impostor")
    impostor.ensure()
    root = build_drive(tmp_path, nonce, signed_receipt(impostor, nonce), host_key_pem)
    status = load_receipt_status(root / RECEIPT_PATH, root / RECEIPT_KEY_PATH, nonce)
    assert status.signature == "invalid" and not status.verified


def test_without_the_hosts_key_the_guest_cannot_check(tmp_path, ttp_key):
    nonce = secrets.token_bytes(32)
    root = build_drive(tmp_path, nonce, signed_receipt(ttp_key, nonce), None)
    assert not (root / RECEIPT_KEY_PATH).exists()
    status = load_receipt_status(root / RECEIPT_PATH, root / RECEIPT_KEY_PATH, nonce)
    assert status.signature == "unchecked" and not status.verified


def test_no_receipt_no_key_on_the_drive(tmp_path, host_key_pem):
    root = build_drive(tmp_path, secrets.token_bytes(32), None, host_key_pem)
    assert not (root / RECEIPT_PATH).exists() and not (root / RECEIPT_KEY_PATH).exists()


def test_no_receipt_key_configured_gives_none():
    assert receipt_key_pem(None) is None
    assert receipt_key_pem(load_receipt_keys(None, required=False)) is None
