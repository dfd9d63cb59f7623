"""EK, AK, credential activation, PCR reads and quotes on a real swtpm."""

from __future__ import annotations

import hashlib
import secrets

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from tpm2_pytss.constants import TPM2_ALG, TPMA_OBJECT
from tpm2_pytss.types import TPM2B_PUBLIC, TPMS_ATTEST, TPMT_SIGNATURE
from tpm2_pytss.utils import make_credential

from trusted_launch.evidence.algorithms import HashAlg
from trusted_launch.tpm.device import TPMDevice
from trusted_launch.tpm.errors import TPMCommandError, UnexpectedKeyError

pytestmark = pytest.mark.swtpm


def _public(data: bytes) -> TPM2B_PUBLIC:
    public, consumed = TPM2B_PUBLIC.unmarshal(data)
    assert consumed == len(data)
    return public


def _ecdsa_verify(ak_public: bytes, message: bytes, signature: bytes) -> None:
    sig, _ = TPMT_SIGNATURE.unmarshal(signature)
    assert sig.sigAlg == TPM2_ALG.ECDSA
    der = encode_dss_signature(int.from_bytes(bytes(sig.signature.ecdsa.signatureR), "big"),
                               int.from_bytes(bytes(sig.signature.ecdsa.signatureS), "big"))
    key = ec.EllipticCurvePublicNumbers(
        int.from_bytes(bytes(_public(ak_public).publicArea.unique.ecc.x), "big"),
        int.from_bytes(bytes(_public(ak_public).publicArea.unique.ecc.y), "big"),
        ec.SECP256R1()).public_key()
    key.verify(der, message, ec.ECDSA(hashes.SHA256()))


def test_ek_certificate_chains_to_swtpm_local_ca(swtpm):
    with TPMDevice(swtpm.tcti) as tpm:
        certificate = x509.load_der_x509_certificate(tpm.ek_certificate())
    issuer_path, root_path = swtpm.ek_ca_certs
    issuer = x509.load_pem_x509_certificate(issuer_path.read_bytes())
    root = x509.load_pem_x509_certificate(root_path.read_bytes())
    certificate.verify_directly_issued_by(issuer)
    issuer.verify_directly_issued_by(root)


def test_ek_public_matches_ek_certificate(swtpm):
    with TPMDevice(swtpm.tcti) as tpm:
        certificate = x509.load_der_x509_certificate(tpm.ek_certificate())
        ek = _public(tpm.ek_public()).publicArea
    cert_key = certificate.public_key()
    assert isinstance(cert_key, rsa.RSAPublicKey)
    assert int.from_bytes(bytes(ek.unique.rsa), "big") == cert_key.public_numbers().n
    assert ek.objectAttributes & TPMA_OBJECT.ADMINWITHPOLICY
    assert not ek.objectAttributes & TPMA_OBJECT.USERWITHAUTH


def test_attestation_key_attributes(device):
    ak = device.ensure_attestation_key()
    area = _public(ak.public).publicArea
    assert area.type == TPM2_ALG.ECC
    assert area.parameters.eccDetail.scheme.scheme == TPM2_ALG.ECDSA
    assert area.parameters.eccDetail.scheme.details.ecdsa.hashAlg == TPM2_ALG.SHA256
    required = (TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.RESTRICTED
                | TPMA_OBJECT.SIGN_ENCRYPT | TPMA_OBJECT.SENSITIVEDATAORIGIN
                | TPMA_OBJECT.USERWITHAUTH)
    assert area.objectAttributes & required == required
    assert not area.objectAttributes & TPMA_OBJECT.DECRYPT
    assert ak.name == b"\x00\x0b" + hashlib.sha256(area.marshal()).digest()


def test_attestation_key_persists_across_restarts(swtpm):
    with TPMDevice(swtpm.tcti) as tpm:
        first = tpm.ensure_attestation_key()
    swtpm.restart()
    with TPMDevice(swtpm.tcti) as tpm:
        again = tpm.ensure_attestation_key()
        assert tpm.transient_handles() == []
    assert again == first


def test_distinct_hosts_have_distinct_attestation_keys(swtpm_factory):
    names = set()
    for process in swtpm_factory(2):
        with TPMDevice(process.tcti) as tpm:
            names.add(tpm.ensure_attestation_key().name)
    assert len(names) == 2


def test_foreign_object_at_ak_handle_is_refused(swtpm):
    with TPMDevice(swtpm.tcti) as tpm:
        srk_handle = tpm.srk_handle
        tpm.ensure_attestation_key()
    with TPMDevice(swtpm.tcti, ak_handle=srk_handle) as tpm:
        with pytest.raises(UnexpectedKeyError, match="0x81000001"):
            tpm.ensure_attestation_key()


def test_activate_credential_round_trip(device):
    ak = device.ensure_attestation_key()
    secret = secrets.token_bytes(32)
    blob, encrypted = make_credential(_public(device.ek_public()), secret, ak.name)
    assert device.activate_credential(blob.marshal(), encrypted.marshal()) == secret
    assert device.transient_handles() == []
    assert device.loaded_sessions() == []


def test_activate_credential_for_another_ak_name_fails(device):
    ak = device.ensure_attestation_key()
    other_name = ak.name[:2] + hashlib.sha256(b"another key").digest()
    blob, encrypted = make_credential(_public(device.ek_public()), b"s" * 32, other_name)
    with pytest.raises(TPMCommandError, match="ActivateCredential"):
        device.activate_credential(blob.marshal(), encrypted.marshal())
    assert device.transient_handles() == []
    assert device.loaded_sessions() == []


def test_activate_credential_for_another_tpm_fails(swtpm_factory):
    mine, other = swtpm_factory(2)
    with TPMDevice(mine.tcti) as tpm, TPMDevice(other.tcti) as foreign:
        ak = tpm.ensure_attestation_key()
        blob, encrypted = make_credential(_public(foreign.ek_public()), b"s" * 32, ak.name)
        with pytest.raises(TPMCommandError):
            tpm.activate_credential(blob.marshal(), encrypted.marshal())


def test_quote_is_signed_by_the_ak_over_current_pcrs(booted_device):
    ak = booted_device.ensure_attestation_key()
    nonce = secrets.token_bytes(20)
    attest_bytes, signature = booted_device.quote("sha256:0-7", nonce)
    _ecdsa_verify(ak.public, attest_bytes, signature)
    attest, _ = TPMS_ATTEST.unmarshal(attest_bytes)
    assert bytes(attest.extraData) == nonce
    pcrs = booted_device.read_pcrs("sha256:0-7")[HashAlg.SHA256]
    expected = hashlib.sha256(b"".join(pcrs[i] for i in range(8))).digest()
    assert bytes(attest.attested.quote.pcrDigest) == expected


def test_read_pcrs_more_than_eight_per_bank(booted_device, expected_pcrs):
    values = booted_device.read_pcrs("sha256:0-9,14")[HashAlg.SHA256]
    expected = expected_pcrs["secureboot_binary_bios_measurements"]["sha256"]
    assert sorted(values) == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 14]
    assert {i: v.hex() for i, v in values.items()} == {i: expected[str(i)] for i in values}
