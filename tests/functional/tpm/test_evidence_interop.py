"""What the host produces verifies with the project's pure-Python evidence code.

This is the TTP's view: parse the bind key and AK publics, verify TPM2_Certify,
and recompute the bind key's PolicyPCR from the firmware event log alone.
"""

from __future__ import annotations

import secrets

import pytest

from trusted_launch.tpm.bindkeys import certify, create_bind_key

tpm2 = pytest.importorskip("trusted_launch.evidence.tpm2", exc_type=ImportError)
eventlog = pytest.importorskip("trusted_launch.evidence.eventlog", exc_type=ImportError)

pytestmark = pytest.mark.swtpm


@pytest.mark.parametrize("algorithm", ["ecc", "rsa"])
def test_certify_and_policy_verify_from_the_event_log(booted_device, booted_swtpm, algorithm):
    ak = tpm2.parse_public(booted_device.ensure_attestation_key().public)
    key = create_bind_key(booted_device, algorithm, "sha256:0-7")
    bind_public = tpm2.parse_public(key.public)
    qualifying = secrets.token_bytes(32)
    attest, signature = certify(booted_device, key, qualifying)

    parsed = tpm2.verify_certify(ak, attest, signature, bind_public,
                                 qualifying_data=qualifying)
    assert parsed.attested.name == key.name == bind_public.name

    replayed = eventlog.replay(eventlog.parse_event_log(booted_swtpm.event_log))
    selection = tpm2.PCRSelection.from_spec(key.pcr_selection)
    assert bind_public.auth_policy == tpm2.policy_pcr_digest(selection, replayed)
    attributes = bind_public.object_attributes
    flags = tpm2.ObjectAttributes
    assert flags.FIXED_TPM in attributes and flags.DECRYPT in attributes
    assert flags.USER_WITH_AUTH not in attributes and flags.SIGN_ENCRYPT not in attributes


def test_tampered_certify_is_rejected(booted_device):
    ak = tpm2.parse_public(booted_device.ensure_attestation_key().public)
    key = create_bind_key(booted_device, "ecc", "sha256:0-7")
    attest, signature = certify(booted_device, key, b"q" * 32)
    other = tpm2.parse_public(create_bind_key(booted_device, "ecc", "sha256:0-7").public)
    with pytest.raises(ValueError, match="Name"):
        tpm2.verify_certify(ak, attest, signature, other, qualifying_data=b"q" * 32)
    with pytest.raises(ValueError, match="extraData"):
        tpm2.verify_certify(ak, attest, signature, tpm2.parse_public(key.public),
                            qualifying_data=b"x" * 32)
