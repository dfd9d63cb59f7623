"""PCR-locked bind keys on a real swtpm: attributes, policy, certify, decryption."""

from __future__ import annotations

import hashlib
import secrets
import threading

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from tpm2_pytss.constants import ESYS_TR, TPM2_ALG, TPM2_ST, TPMA_OBJECT
from tpm2_pytss.types import TPM2B_PUBLIC, TPML_DIGEST_VALUES, TPMS_ATTEST, TPMT_SIGNATURE

from tests.fixtures.swtpm import SECUREBOOT_LOG
from trusted_launch.sandbox.swtpm import tpmt_ha
from trusted_launch.tpm.bindkeys import (
    certify,
    create_bind_key,
    ecdh_zgen,
    rsa_decrypt,
    trial_policy_digest,
)
from trusted_launch.tpm.errors import PCRPolicyMismatch, TPMCommandError

pytestmark = pytest.mark.swtpm

SELECTION = "sha256:0,1,2,3,4,5,6,7"
LABEL = b"trusted-launch/v1 release\0"
TPM_CC_POLICY_PCR = 0x17F


def _area(public: bytes):
    return TPM2B_PUBLIC.unmarshal(public)[0].publicArea


def _ecc_public_key(public: bytes) -> ec.EllipticCurvePublicKey:
    unique = _area(public).unique.ecc
    return ec.EllipticCurvePublicNumbers(int.from_bytes(bytes(unique.x), "big"),
                                         int.from_bytes(bytes(unique.y), "big"),
                                         ec.SECP256R1()).public_key()


def _rsa_public_key(public: bytes) -> rsa.RSAPublicKey:
    return rsa.RSAPublicNumbers(65537, int.from_bytes(bytes(_area(public).unique.rsa),
                                                      "big")).public_key()


def _expected_policy(pcr_hex: dict[str, str]) -> bytes:
    """PolicyPCR(sha256:0-7) written out from the TPM 2.0 spec, Part 3 §23.7."""
    selection = (b"\x00\x00\x00\x01" + b"\x00\x0b" + b"\x03" + b"\xff\x00\x00")
    pcr_digest = hashlib.sha256(b"".join(bytes.fromhex(pcr_hex[str(i)])
                                         for i in range(8))).digest()
    return hashlib.sha256(bytes(32) + TPM_CC_POLICY_PCR.to_bytes(4, "big") + selection
                          + pcr_digest).digest()


def _extend(device, pcr: int) -> None:
    with device.esapi("PCR_Extend") as ectx:
        ectx.pcr_extend(ESYS_TR(pcr), TPML_DIGEST_VALUES([tpmt_ha(0x0B, bytes(32))]))


@pytest.mark.parametrize("algorithm", ["ecc", "rsa"])
def test_bind_key_attributes(booted_device, algorithm):
    key = create_bind_key(booted_device, algorithm, SELECTION)
    area = _area(key.public)
    attributes = area.objectAttributes
    for required in (TPMA_OBJECT.FIXEDTPM, TPMA_OBJECT.FIXEDPARENT, TPMA_OBJECT.DECRYPT,
                     TPMA_OBJECT.SENSITIVEDATAORIGIN):
        assert attributes & required
    for forbidden in (TPMA_OBJECT.SIGN_ENCRYPT, TPMA_OBJECT.RESTRICTED,
                      TPMA_OBJECT.USERWITHAUTH):
        assert not attributes & forbidden
    assert area.nameAlg == TPM2_ALG.SHA256
    assert key.name == b"\x00\x0b" + hashlib.sha256(area.marshal()).digest()
    if algorithm == "ecc":
        assert area.parameters.eccDetail.scheme.scheme == TPM2_ALG.ECDH
    else:
        assert area.parameters.rsaDetail.scheme.scheme == TPM2_ALG.OAEP
        assert area.parameters.rsaDetail.keyBits == 2048


def test_auth_policy_is_policy_pcr_of_the_event_log_replay(booted_device, expected_pcrs):
    key = create_bind_key(booted_device, "ecc", SELECTION)
    expected = _expected_policy(expected_pcrs[SECUREBOOT_LOG.name]["sha256"])
    assert bytes(_area(key.public).authPolicy) == expected
    assert key.auth_policy == expected
    assert trial_policy_digest(booted_device, SELECTION) == expected


def test_certify_is_signed_by_the_ak_and_binds_the_request(booted_device):
    ak = booted_device.ensure_attestation_key()
    key = create_bind_key(booted_device, "ecc", SELECTION)
    qualifying = secrets.token_bytes(32)
    attest_bytes, signature_bytes = certify(booted_device, key, qualifying)
    signature, _ = TPMT_SIGNATURE.unmarshal(signature_bytes)
    der = encode_dss_signature(
        int.from_bytes(bytes(signature.signature.ecdsa.signatureR), "big"),
        int.from_bytes(bytes(signature.signature.ecdsa.signatureS), "big"))
    _ecc_public_key(ak.public).verify(der, attest_bytes, ec.ECDSA(hashes.SHA256()))
    attest, consumed = TPMS_ATTEST.unmarshal(attest_bytes)
    assert consumed == len(attest_bytes)
    assert attest.magic == 0xFF544347
    assert attest.type == TPM2_ST.ATTEST_CERTIFY
    assert bytes(attest.extraData) == qualifying
    assert bytes(attest.attested.certify.name) == key.name
    assert booted_device.transient_handles() == []


def test_ecdh_zgen_equals_software_ecdh(booted_device):
    key = create_bind_key(booted_device, "ecc", SELECTION)
    ephemeral = ec.generate_private_key(ec.SECP256R1())
    numbers = ephemeral.public_key().public_numbers()
    point = (numbers.x.to_bytes(32, "big"), numbers.y.to_bytes(32, "big"))
    shared_x = ecdh_zgen(booted_device, key, point)
    assert shared_x == ephemeral.exchange(ec.ECDH(), _ecc_public_key(key.public))
    assert booted_device.transient_handles() == []
    assert booted_device.loaded_sessions() == []


def test_rsa_oaep_round_trip(booted_device):
    key = create_bind_key(booted_device, "rsa", SELECTION)
    message = secrets.token_bytes(32)
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(),
                        label=LABEL)
    ciphertext = _rsa_public_key(key.public).encrypt(message, oaep)
    assert rsa_decrypt(booted_device, key, ciphertext, LABEL) == message
    with pytest.raises(TPMCommandError, match="RSA_Decrypt"):
        rsa_decrypt(booted_device, key, ciphertext, b"another label\0")
    assert booted_device.transient_handles() == []
    assert booted_device.loaded_sessions() == []


def test_pcr_change_makes_ecdh_fail_with_policy_mismatch(booted_device):
    key = create_bind_key(booted_device, "ecc", SELECTION)
    point = _point(ec.generate_private_key(ec.SECP256R1()))
    ecdh_zgen(booted_device, key, point)
    _extend(booted_device, 7)
    with pytest.raises(PCRPolicyMismatch, match="no longer match"):
        ecdh_zgen(booted_device, key, point)
    assert booted_device.transient_handles() == []
    assert booted_device.loaded_sessions() == []


def test_pcr_change_makes_rsa_decrypt_fail_with_policy_mismatch(booted_device):
    key = create_bind_key(booted_device, "rsa", SELECTION)
    _extend(booted_device, 0)
    with pytest.raises(PCRPolicyMismatch):
        rsa_decrypt(booted_device, key, bytes(256), LABEL)


def test_unselected_pcr_change_keeps_the_key_usable(booted_device):
    key = create_bind_key(booted_device, "ecc", SELECTION)
    _extend(booted_device, 10)
    ephemeral = ec.generate_private_key(ec.SECP256R1())
    assert ecdh_zgen(booted_device, key, _point(ephemeral)) == ephemeral.exchange(
        ec.ECDH(), _ecc_public_key(key.public))


def test_invalid_inputs_are_refused(booted_device):
    ecc_key = create_bind_key(booted_device, "ecc", SELECTION)
    with pytest.raises(ValueError, match="32 bytes"):
        ecdh_zgen(booted_device, ecc_key, (b"\x01" * 31, b"\x01" * 32))
    with pytest.raises(TPMCommandError, match="ECDH_ZGen"):
        ecdh_zgen(booted_device, ecc_key, (b"\x01" * 32, b"\x02" * 32))  # not on the curve
    with pytest.raises(ValueError, match="rsa bind key"):
        rsa_decrypt(booted_device, ecc_key, bytes(256), LABEL)
    with pytest.raises(ValueError, match="algorithm"):
        create_bind_key(booted_device, "dsa", SELECTION)
    assert booted_device.transient_handles() == []
    assert booted_device.loaded_sessions() == []


def test_concurrent_certify_and_zgen_on_one_device(booted_device):
    keys = [create_bind_key(booted_device, "ecc", SELECTION) for _ in range(10)]
    results: dict[int, bool] = {}
    errors: list[BaseException] = []

    def launch(index: int) -> None:
        try:
            certify(booted_device, keys[index], secrets.token_bytes(32))
            ephemeral = ec.generate_private_key(ec.SECP256R1())
            shared = ecdh_zgen(booted_device, keys[index], _point(ephemeral))
            results[index] = shared == ephemeral.exchange(
                ec.ECDH(), _ecc_public_key(keys[index].public))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=launch, args=(i,)) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert results == dict.fromkeys(range(10), True)
    assert booted_device.transient_handles() == []


def test_no_transient_handles_leak_over_many_operations(booted_device):
    key = create_bind_key(booted_device, "ecc", SELECTION)
    point = _point(ec.generate_private_key(ec.SECP256R1()))
    for _ in range(30):
        certify(booted_device, key, b"q")
        ecdh_zgen(booted_device, key, point)
    _extend(booted_device, 3)
    for _ in range(10):
        with pytest.raises(PCRPolicyMismatch):
            ecdh_zgen(booted_device, key, point)
    assert booted_device.transient_handles() == []
    assert booted_device.loaded_sessions() == []


def _point(private_key: ec.EllipticCurvePrivateKey) -> tuple[bytes, bytes]:
    numbers = private_key.public_key().public_numbers()
    return numbers.x.to_bytes(32, "big"), numbers.y.to_bytes(32, "big")


def test_tpm_commands_on_the_launch_path(booted_device):
    key = create_bind_key(booted_device, "ecc", SELECTION)
    point = _point(ec.generate_private_key(ec.SECP256R1()))
    certify(booted_device, key, b"q")  # resolves and checks the persistent SRK once
    booted_device.command_log.clear()
    certify(booted_device, key, b"q")
    assert list(booted_device.command_log) == ["load", "certify", "flush_context"]
    booted_device.command_log.clear()
    ecdh_zgen(booted_device, key, point)
    assert list(booted_device.command_log) == ["load", "start_auth_session", "policy_pcr",
                                         "ecdh_zgen", "flush_context"]
    booted_device.prestart_policy_session()
    assert len(booted_device.loaded_sessions()) == 1
    booted_device.command_log.clear()
    ecdh_zgen(booted_device, key, point)
    assert list(booted_device.command_log) == ["load", "policy_pcr", "ecdh_zgen", "flush_context"]
    assert booted_device.loaded_sessions() == []


def test_prestarted_session_is_flushed_after_a_policy_failure(booted_device):
    key = create_bind_key(booted_device, "rsa", SELECTION)
    _extend(booted_device, 5)
    booted_device.prestart_policy_session()
    with pytest.raises(PCRPolicyMismatch):
        rsa_decrypt(booted_device, key, bytes(256), LABEL)
    assert booted_device.loaded_sessions() == []
    assert booted_device.transient_handles() == []
