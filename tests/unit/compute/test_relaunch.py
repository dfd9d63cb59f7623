"""The launch nonce commitment kept in system metadata across moves and restarts."""

from __future__ import annotations

import secrets
import uuid

import pytest

from trusted_launch.compute.relaunch import (
    COMMITMENT_KEY,
    NonceChanged,
    TrustedRelaunchRefused,
    check_or_commit,
    nonce_commitment,
)


def test_first_release_records_a_commitment_that_hides_the_nonce() -> None:
    nonce, instance = secrets.token_bytes(32), str(uuid.uuid4())
    system_metadata: dict[str, str] = {}
    assert check_or_commit(system_metadata, instance, nonce) is True
    recorded = system_metadata[COMMITMENT_KEY]
    assert recorded == nonce_commitment(nonce, instance) and len(recorded) == 64
    assert nonce.hex() not in recorded


def test_the_same_nonce_matches_and_records_nothing_new() -> None:
    nonce, instance = secrets.token_bytes(32), str(uuid.uuid4())
    system_metadata = {COMMITMENT_KEY: nonce_commitment(nonce, instance)}
    assert check_or_commit(system_metadata, instance, nonce) is False
    assert system_metadata == {COMMITMENT_KEY: nonce_commitment(nonce, instance)}


def test_another_nonce_is_refused_without_naming_either() -> None:
    nonce, other, instance = secrets.token_bytes(32), secrets.token_bytes(32), str(uuid.uuid4())
    system_metadata = {COMMITMENT_KEY: nonce_commitment(nonce, instance)}
    with pytest.raises(NonceChanged) as refused:
        check_or_commit(system_metadata, instance, other)
    assert refused.value.check == "nonce_changed"
    assert nonce.hex() not in str(refused.value) and other.hex() not in str(refused.value)
    assert system_metadata[COMMITMENT_KEY] == nonce_commitment(nonce, instance)


def test_commitment_is_bound_to_the_instance() -> None:
    nonce = secrets.token_bytes(32)
    assert nonce_commitment(nonce, "a") != nonce_commitment(nonce, "b")
    with pytest.raises(NonceChanged):
        check_or_commit({COMMITMENT_KEY: nonce_commitment(nonce, "a")}, "b", nonce)


def test_garbage_commitment_is_a_refusal_not_a_crash() -> None:
    with pytest.raises(NonceChanged):
        check_or_commit({COMMITMENT_KEY: "é" * 64}, "a", secrets.token_bytes(32))


def test_relaunch_refusal_message_names_operation_and_reason() -> None:
    refused = TrustedRelaunchRefused(operation="live migration", reason="trusted launch x: y")
    assert str(refused) == ("Trusted launch refused to start the instance on this host "
                            "(live migration): trusted launch x: y")
