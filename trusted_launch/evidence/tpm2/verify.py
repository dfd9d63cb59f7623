"""Signature, quote and certify verification against an attestation key."""

from __future__ import annotations

import hmac

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from trusted_launch.evidence.algorithms import HashAlg
from trusted_launch.evidence.errors import (
    AttestationMismatch,
    PCRDigestMismatch,
    SignatureInvalid,
    UnsuitableKey,
)
from trusted_launch.evidence.tpm2.algs import TPMAlg
from trusted_launch.evidence.tpm2.attest import (
    Attest,
    AttestType,
    CertifyInfo,
    QuoteInfo,
    parse_attest,
)
from trusted_launch.evidence.tpm2.pcr import PCRValues, pcr_digest
from trusted_launch.evidence.tpm2.public import ObjectAttributes, ObjectType, PublicArea
from trusted_launch.evidence.tpm2.signature import Signature, parse_signature

_HASHES: dict[HashAlg, type[hashes.HashAlgorithm]] = {
    HashAlg.SHA1: hashes.SHA1,
    HashAlg.SHA256: hashes.SHA256,
    HashAlg.SHA384: hashes.SHA384,
    HashAlg.SHA512: hashes.SHA512,
}
_KEY_TYPES = {TPMAlg.RSASSA: ObjectType.RSA, TPMAlg.RSAPSS: ObjectType.RSA,
              TPMAlg.ECDSA: ObjectType.ECC}


def verify_signature(public: PublicArea, message: bytes, signature: Signature) -> None:
    """Check that ``signature`` over ``message`` was made with ``public``'s key.

    Raises SignatureInvalid when it was not, or when the key could not have
    made it (wrong key type, not a signing key, a scheme other than the key's).
    """
    _check_signing_key(public, signature)
    hash_cls = _HASHES.get(signature.hash_alg)
    if hash_cls is None:
        raise SignatureInvalid(f"{signature.hash_alg.bank_name} signatures are not supported")
    try:
        if signature.algorithm is TPMAlg.ECDSA:
            _verify_ecdsa(public, message, signature, hash_cls())
        else:
            _verify_rsa(public, message, signature, hash_cls())
    except (InvalidSignature, UnsupportedAlgorithm, ValueError):
        raise SignatureInvalid(
            f"{signature.algorithm.name}-{signature.hash_alg.bank_name} signature does not "
            f"verify with key {public.name.hex()}") from None


def _check_signing_key(public: PublicArea, signature: Signature) -> None:
    if public.type is not _KEY_TYPES[signature.algorithm]:
        raise SignatureInvalid(
            f"{signature.algorithm.name} signature cannot come from a {public.type.name} key")
    if not public.object_attributes & ObjectAttributes.SIGN_ENCRYPT:
        raise SignatureInvalid(f"key {public.name.hex()} is not a signing key")
    scheme = public.parameters.scheme  # type: ignore[union-attr]
    if not scheme.is_null and (scheme.algorithm, scheme.hash_alg) != (
            signature.algorithm, signature.hash_alg):
        raise SignatureInvalid(
            f"signature scheme {signature.algorithm.name}-{signature.hash_alg.bank_name} "
            f"differs from the key's {scheme.algorithm.name}-{_bank(scheme.hash_alg)}")


def _bank(hash_alg: HashAlg | None) -> str:
    return hash_alg.bank_name if hash_alg else "none"


def _verify_rsa(public: PublicArea, message: bytes, signature: Signature,
                hash_alg: hashes.HashAlgorithm) -> None:
    key = public.public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    if signature.algorithm is TPMAlg.RSASSA:
        key.verify(signature.signature, message, padding.PKCS1v15(), hash_alg)
        return
    # TPM 2.0 Part 1 asks for the largest salt FIPS 186-4 allows (the digest
    # length, as swtpm uses); older TPMs use the largest the key allows. Only
    # these two exact lengths are accepted (cryptography's MAX_LENGTH would
    # accept any salt length when verifying).
    digest_size = hash_alg.digest_size
    max_salt = (key.key_size - 1 + 7) // 8 - digest_size - 2
    for salt in dict.fromkeys((digest_size, max_salt)):
        try:
            key.verify(signature.signature, message,
                       padding.PSS(padding.MGF1(hash_alg), salt), hash_alg)
            return
        except InvalidSignature:
            continue
    raise InvalidSignature


def _verify_ecdsa(public: PublicArea, message: bytes, signature: Signature,
                  hash_alg: hashes.HashAlgorithm) -> None:
    key = public.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    der = encode_dss_signature(int.from_bytes(signature.r, "big"),
                               int.from_bytes(signature.s, "big"))
    key.verify(der, message, ec.ECDSA(hash_alg))


def _check_attestation_key(ak_public: PublicArea) -> None:
    """Only a restricted signing key guarantees that a TPMS_ATTEST is TPM-made."""
    required = ObjectAttributes.SIGN_ENCRYPT | ObjectAttributes.RESTRICTED
    if ak_public.object_attributes & required != required:
        raise UnsuitableKey(f"attestation key {ak_public.name.hex()} is not a restricted "
                            "signing key, so its signatures do not prove TPM origin")


def _verified_attest(ak_public: PublicArea, attest: bytes, signature: bytes | Signature,
                     expected: AttestType) -> tuple[Attest, Signature]:
    _check_attestation_key(ak_public)
    sig = signature if isinstance(signature, Signature) else parse_signature(signature)
    verify_signature(ak_public, attest, sig)
    parsed = parse_attest(attest)
    if parsed.type is not expected:
        raise AttestationMismatch(
            f"attestation is of type {parsed.type.name}, expected {expected.name}")
    return parsed, sig


def _check_extra_data(parsed: Attest, expected: bytes, what: str) -> None:
    if not hmac.compare_digest(parsed.extra_data, expected):
        raise AttestationMismatch(f"extraData does not match the {what}")


def verify_quote(ak_public: PublicArea, attest: bytes, signature: bytes | Signature,
                 pcr_values: PCRValues, *, nonce: bytes | None = None) -> Attest:
    """Verify a TPM2_Quote: signature, type, nonce and PCR digest.

    The TPM hashes the quoted PCR values with the signing scheme's hash, so
    the expected digest is computed with the signature's hash algorithm.
    """
    parsed, sig = _verified_attest(ak_public, attest, signature, AttestType.QUOTE)
    if nonce is not None:
        _check_extra_data(parsed, nonce, "expected nonce")
    info = parsed.attested
    assert isinstance(info, QuoteInfo)
    if not len(info.pcr_select):
        raise AttestationMismatch("quote selects no PCRs, so it attests nothing")
    expected = pcr_digest(info.pcr_select, pcr_values, sig.hash_alg)
    if not hmac.compare_digest(info.pcr_digest, expected):
        raise PCRDigestMismatch(
            f"quoted PCR digest {info.pcr_digest.hex()} over {info.pcr_select} differs from "
            f"{expected.hex()} computed from the given PCR values")
    return parsed


def verify_certify(ak_public: PublicArea, attest: bytes, signature: bytes | Signature,
                   certified: PublicArea, *, qualifying_data: bytes) -> Attest:
    """Verify a TPM2_Certify of ``certified`` by ``ak_public``."""
    parsed, _ = _verified_attest(ak_public, attest, signature, AttestType.CERTIFY)
    _check_extra_data(parsed, qualifying_data, "qualifying data of this request")
    info = parsed.attested
    assert isinstance(info, CertifyInfo)
    if not hmac.compare_digest(info.name, certified.name):
        raise AttestationMismatch(
            f"certified Name {info.name.hex()} is not the Name {certified.name.hex()} "
            "of the given public area")
    return parsed
