"""TPM 2.0 structures, signatures, quote/certify verification and PolicyPCR digests."""

from __future__ import annotations

import hashlib
import struct

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from tpm2_pytss.constants import TPM2_GENERATED, TPM2_ST, TPMA_OBJECT
from tpm2_pytss.types import (
    TPM2B_DATA,
    TPM2B_DIGEST,
    TPM2B_NAME,
    TPM2B_PUBLIC,
    TPML_PCR_SELECTION,
    TPMS_ATTEST,
    TPMS_CERTIFY_INFO,
    TPMS_CLOCK_INFO,
    TPMS_QUOTE_INFO,
    TPMT_PUBLIC,
    TPMU_ATTEST,
)

from trusted_launch.evidence.algorithms import HashAlg
from trusted_launch.evidence.errors import (
    AttestationMismatch,
    EvidenceError,
    MissingPCRValue,
    ParseError,
    PCRDigestMismatch,
    SignatureInvalid,
    UnknownAlgorithmError,
    UnsuitableKey,
)
from trusted_launch.evidence.tpm2 import (
    AttestType,
    ECCCurve,
    ECCParameters,
    ObjectAttributes,
    ObjectType,
    PCRSelection,
    RSAParameters,
    Signature,
    TPMAlg,
    marshal_pcr_selection,
    parse_attest,
    parse_pcr_selection,
    parse_public,
    parse_signature,
    pcr_digest,
    policy_pcr_digest,
    verify_certify,
    verify_quote,
    verify_signature,
    with_initial_values,
)

AK_ATTRS = (TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.SENSITIVEDATAORIGIN
            | TPMA_OBJECT.USERWITHAUTH | TPMA_OBJECT.RESTRICTED | TPMA_OBJECT.SIGN_ENCRYPT)
SHA256_PCRS = {HashAlg.SHA256: {i: hashlib.sha256(bytes([i])).digest() for i in range(24)}}


# ---------------------------------------------------------------- helpers

def tpm_public(template: str, key=None, attrs=AK_ATTRS, auth_policy: bytes = b"") -> bytes:
    """A marshalled TPM2B_PUBLIC built by tpm2-pytss, holding ``key``'s public part."""
    public = TPMT_PUBLIC.parse(template, objectAttributes=attrs, authPolicy=auth_policy)
    if isinstance(key, rsa.RSAPrivateKey):
        numbers = key.public_key().public_numbers()
        public.unique.rsa = numbers.n.to_bytes(key.key_size // 8, "big")
        public.parameters.rsaDetail.exponent = 0 if numbers.e == 65537 else numbers.e
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        numbers = key.public_key().public_numbers()
        size = (key.curve.key_size + 7) // 8
        public.unique.ecc.x = numbers.x.to_bytes(size, "big")
        public.unique.ecc.y = numbers.y.to_bytes(size, "big")
    return TPM2B_PUBLIC(public).marshal()


def sign(key, message: bytes, hash_alg: HashAlg = HashAlg.SHA256, *, pss_salt=None) -> bytes:
    """A marshalled TPMT_SIGNATURE over ``message``, made in software."""
    chosen = {HashAlg.SHA1: hashes.SHA1(), HashAlg.SHA256: hashes.SHA256(),
              HashAlg.SHA384: hashes.SHA384()}[hash_alg]
    if isinstance(key, ec.EllipticCurvePrivateKey):
        r, s = decode_dss_signature(key.sign(message, ec.ECDSA(chosen)))
        size = (key.curve.key_size + 7) // 8
        return (struct.pack(">HHH", TPMAlg.ECDSA, hash_alg, size) + r.to_bytes(size, "big")
                + struct.pack(">H", size) + s.to_bytes(size, "big"))
    if pss_salt is None:
        raw = key.sign(message, padding.PKCS1v15(), chosen)
        alg = TPMAlg.RSASSA
    else:
        raw = key.sign(message, padding.PSS(padding.MGF1(chosen), pss_salt), chosen)
        alg = TPMAlg.RSAPSS
    return struct.pack(">HHH", alg, hash_alg, len(raw)) + raw


def attest_bytes(kind: str, extra: bytes, *, selection: str = "sha256:0,1,2",
                 digest: bytes = bytes(32), name: bytes = b"") -> bytes:
    """A marshalled TPMS_ATTEST (quote or certify) built by tpm2-pytss."""
    if kind == "quote":
        st = TPM2_ST.ATTEST_QUOTE
        attested = TPMU_ATTEST(quote=TPMS_QUOTE_INFO(
            pcrSelect=TPML_PCR_SELECTION.parse(selection), pcrDigest=TPM2B_DIGEST(digest)))
    else:
        st = TPM2_ST.ATTEST_CERTIFY
        attested = TPMU_ATTEST(certify=TPMS_CERTIFY_INFO(
            name=TPM2B_NAME(name), qualifiedName=TPM2B_NAME(name)))
    return TPMS_ATTEST(
        magic=TPM2_GENERATED.VALUE, type=st, qualifiedSigner=TPM2B_NAME(b"\x00\x0b" + bytes(32)),
        extraData=TPM2B_DATA(extra),
        clockInfo=TPMS_CLOCK_INFO(clock=1234, resetCount=2, restartCount=3, safe=1),
        firmwareVersion=0x2019, attested=attested).marshal()


@pytest.fixture(scope="module")
def ecc_ak():
    key = ec.generate_private_key(ec.SECP256R1())
    return key, parse_public(tpm_public("ecc256:ecdsa-sha256", key))


@pytest.fixture(scope="module")
def rsa_key():
    return rsa.generate_private_key(65537, 2048)


# ---------------------------------------------------------------- PCR selections

@pytest.mark.parametrize("spec", ["sha256:0,1,2,3,4,5,6,7", "sha1:0,7+sha256:23",
                                  "sha384:16", "sha256:0,1,2+sha1:7+sha512:10"])
def test_pcr_selection_marshal_matches_tpm2_pytss(spec):
    ours = PCRSelection.from_spec(spec)
    theirs = TPML_PCR_SELECTION.parse(spec).marshal()
    assert marshal_pcr_selection(ours) == theirs
    parsed = parse_pcr_selection(theirs)
    assert parsed == ours and parsed.raw == theirs and str(parsed) == spec


def test_pcr_selection_keeps_bank_order_and_sorts_pcrs():
    selection = PCRSelection.of({HashAlg.SHA256: [7, 0, 3, 3], HashAlg.SHA1: [1]})
    assert selection.banks == ((HashAlg.SHA256, (0, 3, 7)), (HashAlg.SHA1, (1,)))
    assert len(selection) == 4


def test_pcr_selection_of_rejects_bad_indexes():
    for pcrs in ([-1], [256], [0, 1000]):
        with pytest.raises(EvidenceError, match=r"must be 0\.\.255"):
            PCRSelection.of({HashAlg.SHA256: pcrs})


def test_pcr_selection_wide_bitmap_and_empty_bank():
    data = struct.pack(">IHB", 2, HashAlg.SHA256, 4) + b"\x01\x00\x00\x80" \
        + struct.pack(">HB", HashAlg.SHA1, 0)
    parsed = parse_pcr_selection(data)
    assert parsed.banks == ((HashAlg.SHA256, (0, 31)), (HashAlg.SHA1, ()))


@pytest.mark.parametrize(("data", "problem", "offset"), [
    (struct.pack(">I", 17), "count 17 exceeds 16", 0),
    (struct.pack(">IHB", 1, 0x99, 3) + bytes(3), "unknown hash algorithm id 0x0099", 4),
    (struct.pack(">IHB", 1, 0x0B, 33) + bytes(33), "sizeofSelect 33 exceeds 32", 6),
    (struct.pack(">IHB", 2, 0x0B, 3) + bytes(3) + struct.pack(">HB", 0x0B, 3) + bytes(3),
     "bank sha256 selected twice", 10),
    (struct.pack(">IHB", 1, 0x0B, 3) + bytes(2), "pcrSelect needs 3 bytes, only 2 left", 7),
    (struct.pack(">IHB", 1, 0x0B, 3) + bytes(4), "1 unexpected trailing bytes", 10),
])
def test_pcr_selection_rejects_bad_input(data, problem, offset):
    with pytest.raises(ParseError) as info:
        parse_pcr_selection(data)
    assert problem in str(info.value) and info.value.offset == offset


def test_pcr_selection_spec_ranges():
    assert PCRSelection.from_spec("sha256:0-3,7+sha1:5-5") == PCRSelection.of(
        {HashAlg.SHA256: [0, 1, 2, 3, 7], HashAlg.SHA1: [5]})


@pytest.mark.parametrize("spec", ["sha256", "sha256:", "sha256:x", "sha256:1+sha256:2",
                                  "md5:1", "sha256:999", "sha256:7-3", "sha256:1-", "sha256:-1"])
def test_pcr_selection_spec_errors(spec):
    with pytest.raises(ParseError):
        PCRSelection.from_spec(spec)


def test_pcr_digest_hashes_selected_values_in_order():
    values = {HashAlg.SHA256: SHA256_PCRS[HashAlg.SHA256],
              HashAlg.SHA1: {7: b"\x07" * 20}}
    selection = PCRSelection.of({HashAlg.SHA256: [2, 0], HashAlg.SHA1: [7]})
    expected = hashlib.sha1(values[HashAlg.SHA256][0] + values[HashAlg.SHA256][2]
                            + b"\x07" * 20).digest()
    assert pcr_digest(selection, values, HashAlg.SHA1) == expected


def test_pcr_digest_missing_or_wrong_size_value():
    selection = PCRSelection.of({HashAlg.SHA256: [0, 1]})
    with pytest.raises(MissingPCRValue, match="sha256:1"):
        pcr_digest(selection, {HashAlg.SHA256: {0: bytes(32)}}, HashAlg.SHA256)
    with pytest.raises(MissingPCRValue, match="has 20 bytes, expected 32"):
        pcr_digest(selection, {HashAlg.SHA256: {0: bytes(32), 1: bytes(20)}}, HashAlg.SHA256)


def test_with_initial_values_fills_reset_values():
    selection = PCRSelection.of({HashAlg.SHA1: [0, 17, 23]})
    filled = with_initial_values(selection, {HashAlg.SHA1: {0: b"\x01" * 20}})
    assert filled[HashAlg.SHA1] == {0: b"\x01" * 20, 17: b"\xff" * 20, 23: bytes(20)}


# ---------------------------------------------------------------- public areas

@pytest.mark.parametrize(("template", "key_factory"), [
    ("rsa2048:rsassa-sha256", lambda: rsa.generate_private_key(65537, 2048)),
    ("rsa2048:rsapss-sha384", lambda: rsa.generate_private_key(3, 2048)),
    ("ecc256:ecdsa-sha256", lambda: ec.generate_private_key(ec.SECP256R1())),
    ("ecc384:ecdsa-sha384", lambda: ec.generate_private_key(ec.SECP384R1())),
])
def test_public_matches_tpm2_pytss(template, key_factory):
    key = key_factory()
    data = tpm_public(template, key)
    ours = parse_public(data)
    theirs, _ = TPM2B_PUBLIC.unmarshal(data)
    assert ours.name == bytes(theirs.get_name())
    assert ours.marshal() == data and ours.marshal(tpm2b=False) == data[2:]
    assert int(ours.type) == int(theirs.publicArea.type)
    assert int(ours.object_attributes) == int(theirs.publicArea.objectAttributes)
    assert ours.name_alg is HashAlg.SHA256
    assert ours.public_key().public_numbers() == key.public_key().public_numbers()
    scheme = ours.parameters.scheme
    assert int(scheme.algorithm) == int(theirs.publicArea.parameters.asymDetail.scheme.scheme)


def test_public_rsa_fields_and_bare_tpmt(rsa_key):
    data = tpm_public("rsa2048:rsassa-sha256", rsa_key)
    public = parse_public(data[2:], tpm2b=False)
    assert isinstance(public.parameters, RSAParameters)
    assert public.parameters.key_bits == 2048 and public.parameters.exponent == 0
    assert public.parameters.public_exponent == 65537
    assert public.parameters.scheme.hash_alg is HashAlg.SHA256
    assert public.object_attributes & ObjectAttributes.RESTRICTED
    assert ObjectAttributes.DECRYPT not in public.object_attributes


def test_public_bind_key_with_policy_and_symmetric(rsa_key):
    attrs = TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.DECRYPT \
        | TPMA_OBJECT.SENSITIVEDATAORIGIN | TPMA_OBJECT.NODA
    policy = bytes(range(32))
    public = parse_public(tpm_public("rsa2048:oaep-sha256", rsa_key, attrs, policy))
    assert public.auth_policy == policy
    assert public.parameters.scheme.algorithm is TPMAlg.OAEP
    assert ObjectAttributes.USER_WITH_AUTH not in public.object_attributes
    srk = parse_public(tpm_public("ecc256:aes128cfb", ec.generate_private_key(ec.SECP256R1()),
                                  AK_ATTRS & ~TPMA_OBJECT.SIGN_ENCRYPT | TPMA_OBJECT.DECRYPT))
    assert isinstance(srk.parameters, ECCParameters)
    assert srk.parameters.curve is ECCCurve.NIST_P256
    assert srk.parameters.symmetric.algorithm is TPMAlg.AES
    assert srk.parameters.symmetric.key_bits == 128
    assert srk.parameters.symmetric.mode is TPMAlg.CFB


@pytest.mark.parametrize("template", ["keyedhash", "hmac:sha256", "xor:sha256", "aes128cfb"])
def test_public_symmetric_objects(template):
    data = tpm_public(template, attrs=TPMA_OBJECT.USERWITHAUTH | TPMA_OBJECT.SIGN_ENCRYPT
                      if template.startswith("hmac") else TPMA_OBJECT.USERWITHAUTH
                      | TPMA_OBJECT.DECRYPT if template.startswith("aes")
                      else TPMA_OBJECT.USERWITHAUTH)
    public = parse_public(data)
    theirs, _ = TPM2B_PUBLIC.unmarshal(data)
    assert public.name == bytes(theirs.get_name())
    assert public.type in (ObjectType.KEYEDHASH, ObjectType.SYMCIPHER)
    with pytest.raises(UnsuitableKey):
        public.public_key()


def _ecc_public() -> bytearray:
    return bytearray(tpm_public("ecc256:ecdsa-sha256", ec.generate_private_key(ec.SECP256R1())))


def test_public_rejects_hostile_input(rsa_key):
    good = _ecc_public()
    cases = {
        "unknown type": (good[:2] + b"\x00\x99" + good[4:], UnknownAlgorithmError, 2),
        "null nameAlg": (good[:4] + b"\x00\x10" + good[6:], UnknownAlgorithmError, 4),
        "reserved bits": (good[:6] + b"\x80\x00\x00\x00" + good[10:], ParseError, 6),
        "trailing": (good[:1] + bytes([good[1] + 1]) + good[2:] + b"\x00", ParseError, None),
        "outer trailing": (good + b"\x00", ParseError, len(good)),
        "huge size": (b"\xff\xff" + good[2:], ParseError, 2),
        "empty": (b"\x00\x00", ParseError, 0),
    }
    for label, (data, error, offset) in cases.items():
        with pytest.raises(error) as info:
            parse_public(bytes(data))
        if offset is not None:
            assert info.value.offset == offset, label
    for cut in range(len(good)):
        with pytest.raises(ParseError):
            parse_public(bytes(good[:cut]))


def test_public_rejects_bad_keys(rsa_key):
    ecc = _ecc_public()
    ecc[-1] ^= 1  # y no longer on the curve
    with pytest.raises(ParseError, match="invalid public key"):
        parse_public(bytes(ecc))
    rsa_public = bytearray(tpm_public("rsa2048:rsassa-sha256", rsa_key))
    rsa_public[22:24] = struct.pack(">H", 3072)   # keyBits, after AES-128-CFB + scheme
    with pytest.raises(ParseError, match="does not match keyBits 3072"):
        parse_public(bytes(rsa_public))
    wrong_policy = tpm_public("ecc256:ecdsa-sha256", ec.generate_private_key(ec.SECP256R1()),
                              auth_policy=bytes(20))
    with pytest.raises(ParseError, match="authPolicy has 20 bytes"):
        parse_public(wrong_policy)


# ---------------------------------------------------------------- signatures

def test_parse_signature_fields(ecc_ak):
    key, _ = ecc_ak
    sig = parse_signature(sign(key, b"m"))
    assert sig.algorithm is TPMAlg.ECDSA and sig.hash_alg is HashAlg.SHA256
    assert len(sig.r) == len(sig.s) == 32 and sig.signature == b""


@pytest.mark.parametrize(("data", "error", "problem"), [
    (struct.pack(">HH", 0x10, 0x0B), UnknownAlgorithmError, "sigAlg 0x0010 (NULL)"),
    (struct.pack(">HH", 0x1A, 0x0B), UnknownAlgorithmError, "(ECDAA) is not allowed"),
    (struct.pack(">HH", 0x14, 0x55), UnknownAlgorithmError, "unknown hash algorithm id 0x0055"),
    (struct.pack(">HHH", 0x14, 0x0B, 600) + bytes(600), ParseError, "sig has 600 bytes"),
    (struct.pack(">HHH", 0x14, 0x0B, 0), ParseError, "sig has 0 bytes"),
    (struct.pack(">HHH", 0x18, 0x0B, 32) + bytes(32), ParseError, "signatureS size needs 2"),
    (struct.pack(">HHH", 0x14, 0x0B, 4) + bytes(5), ParseError, "1 unexpected trailing"),
    (b"\x00", ParseError, "sigAlg needs 2 bytes, only 1 left"),
])
def test_parse_signature_rejects(data, error, problem):
    with pytest.raises(error, match=problem.replace("(", r"\(").replace(")", r"\)")):
        parse_signature(data)


@pytest.mark.parametrize("salt", [32, 222, padding.PSS.MAX_LENGTH])
def test_verify_rsapss_salt_lengths(rsa_key, salt):
    public = parse_public(tpm_public("rsa2048:rsapss-sha256", rsa_key))
    sig = parse_signature(sign(rsa_key, b"message", pss_salt=salt))
    verify_signature(public, b"message", sig)
    with pytest.raises(SignatureInvalid):
        verify_signature(public, b"messagE", sig)


@pytest.mark.parametrize("salt", [0, 20, 100])
def test_verify_rsapss_refuses_other_salt_lengths(rsa_key, salt):
    public = parse_public(tpm_public("rsa2048:rsapss-sha256", rsa_key))
    sig = parse_signature(sign(rsa_key, b"message", pss_salt=salt))
    with pytest.raises(SignatureInvalid):
        verify_signature(public, b"message", sig)


@pytest.mark.parametrize("hash_alg", [HashAlg.SHA1, HashAlg.SHA256, HashAlg.SHA384])
def test_verify_rsassa_and_ecdsa(rsa_key, hash_alg):
    for key, template in ((rsa_key, "rsa2048"), (ec.generate_private_key(ec.SECP384R1()),
                                                 "ecc384")):
        public = parse_public(tpm_public(template, key))   # NULL scheme: any hash
        sig = parse_signature(sign(key, b"payload", hash_alg))
        verify_signature(public, b"payload", sig)
        with pytest.raises(SignatureInvalid, match="does not verify"):
            verify_signature(public, b"payload!", sig)


def test_verify_signature_refuses_key_mismatches(rsa_key, ecc_ak):
    key, ecc_public = ecc_ak
    rsa_public = parse_public(tpm_public("rsa2048:rsassa-sha256", rsa_key))
    ecdsa = parse_signature(sign(key, b"m"))
    with pytest.raises(SignatureInvalid, match="cannot come from a RSA key"):
        verify_signature(rsa_public, b"m", ecdsa)
    with pytest.raises(SignatureInvalid, match="differs from the key's ECDSA-sha256"):
        verify_signature(ecc_public, b"m", parse_signature(sign(key, b"m", HashAlg.SHA384)))
    not_signing = parse_public(tpm_public("ecc256", key, TPMA_OBJECT.DECRYPT))
    with pytest.raises(SignatureInvalid, match="not a signing key"):
        verify_signature(not_signing, b"m", ecdsa)
    other = parse_public(tpm_public("ecc256:ecdsa-sha256", ec.generate_private_key(ec.SECP256R1())))
    with pytest.raises(SignatureInvalid):
        verify_signature(other, b"m", ecdsa)
    huge_r = Signature(TPMAlg.ECDSA, HashAlg.SHA256, r=b"\xff" * 40, s=b"\x01")
    with pytest.raises(SignatureInvalid):
        verify_signature(ecc_public, b"m", huge_r)


# ---------------------------------------------------------------- attest structures

def test_parse_attest_quote_matches_tpm2_pytss():
    data = attest_bytes("quote", b"nonce", selection="sha256:0,1+sha1:7", digest=b"\x01" * 32)
    attest = parse_attest(data)
    assert attest.type is AttestType.QUOTE and attest.extra_data == b"nonce"
    assert attest.clock_info.clock == 1234 and attest.clock_info.safe
    assert attest.clock_info.reset_count == 2 and attest.clock_info.restart_count == 3
    assert attest.firmware_version == 0x2019 and attest.raw == data
    assert str(attest.attested.pcr_select) == "sha256:0,1+sha1:7"
    assert attest.attested.pcr_digest == b"\x01" * 32
    prefixed = struct.pack(">H", len(data)) + data
    assert parse_attest(prefixed, tpm2b=True) == attest


def test_parse_attest_certify():
    name = b"\x00\x0b" + bytes(range(32))
    attest = parse_attest(attest_bytes("certify", b"q", name=name))
    assert attest.type is AttestType.CERTIFY
    assert attest.attested.name == name == attest.attested.qualified_name


def test_parse_attest_rejects_hostile_input():
    good = attest_bytes("quote", b"n")
    cases = [
        (b"\x00" + good[1:], "magic 0x0054", 0),
        (good[:4] + b"\x80\x20" + good[6:], "type 0x8020 is not a TPMI_ST_ATTEST", 4),
        (good[:4] + b"\x80\x19" + good[6:], "TIME (0x8019) is not supported", 4),
        (good[:6] + b"\xff\xff" + good[8:], "qualifiedSigner needs 65535 bytes", 8),
        (good[:6] + b"\x00\x05" + good[8:], "qualifiedSigner of 5 bytes is neither", 6),
        (good + b"\x00", "1 unexpected trailing bytes", len(good)),
    ]
    for data, problem, offset in cases:
        with pytest.raises(ParseError) as info:
            parse_attest(data)
        assert problem in str(info.value) and info.value.offset == offset
    long_extra = good[:42] + struct.pack(">H", 67) + bytes(67) + good[45:]
    with pytest.raises(ParseError, match="extraData size 67 exceeds 66"):
        parse_attest(long_extra)
    with pytest.raises(ParseError, match="1 unexpected trailing"):
        parse_attest(struct.pack(">H", len(good)) + good + b"\x00", tpm2b=True)
    for cut in range(len(good)):
        with pytest.raises(ParseError):
            parse_attest(good[:cut])


# ---------------------------------------------------------------- quote and certify

def _quote(key, values, nonce=b"nonce-1", selection="sha256:0,1,2", hash_alg=HashAlg.SHA256):
    digest = pcr_digest(PCRSelection.from_spec(selection), values, hash_alg)
    data = attest_bytes("quote", nonce, selection=selection, digest=digest)
    return data, sign(key, data, hash_alg)


def test_verify_quote_accepts_and_checks_nonce_and_pcrs(ecc_ak):
    key, ak = ecc_ak
    data, sig = _quote(key, SHA256_PCRS)
    attest = verify_quote(ak, data, sig, SHA256_PCRS, nonce=b"nonce-1")
    assert attest.type is AttestType.QUOTE
    assert verify_quote(ak, data, parse_signature(sig), SHA256_PCRS) == attest
    with pytest.raises(AttestationMismatch, match="extraData"):
        verify_quote(ak, data, sig, SHA256_PCRS, nonce=b"nonce-2")
    changed = {HashAlg.SHA256: dict(SHA256_PCRS[HashAlg.SHA256])}
    changed[HashAlg.SHA256][2] = bytes(32)
    with pytest.raises(PCRDigestMismatch, match="sha256:0,1,2"):
        verify_quote(ak, data, sig, changed)
    changed[HashAlg.SHA256][5] = bytes(32)   # not selected: no effect
    changed[HashAlg.SHA256][2] = SHA256_PCRS[HashAlg.SHA256][2]
    verify_quote(ak, data, sig, changed)


def test_verify_quote_refuses_empty_selection(ecc_ak):
    key, ak = ecc_ak
    data = attest_bytes("quote", b"")
    start = data.index(bytes.fromhex("00000001000b03070000"))   # sha256:0,1,2
    data = data[:start] + struct.pack(">I", 0) + data[start + 10:]
    assert parse_attest(data).attested.pcr_select.banks == ()
    with pytest.raises(AttestationMismatch, match="selects no PCRs"):
        verify_quote(ak, data, sign(key, data), SHA256_PCRS)


def test_verify_quote_digest_uses_signing_hash(rsa_key):
    ak = parse_public(tpm_public("rsa2048:rsassa-sha1", rsa_key))
    data, sig = _quote(rsa_key, SHA256_PCRS, hash_alg=HashAlg.SHA1)
    verify_quote(ak, data, sig, SHA256_PCRS)
    data, sig = _quote(rsa_key, SHA256_PCRS, hash_alg=HashAlg.SHA256)
    with pytest.raises(SignatureInvalid, match="differs from the key's RSASSA-sha1"):
        verify_quote(ak, data, sig, SHA256_PCRS)


def test_verify_quote_refuses_wrong_type_and_unrestricted_key(ecc_ak):
    key, ak = ecc_ak
    certify = attest_bytes("certify", b"nonce-1", name=b"\x00\x0b" + bytes(32))
    with pytest.raises(AttestationMismatch, match="type CERTIFY, expected QUOTE"):
        verify_quote(ak, certify, sign(key, certify), SHA256_PCRS)
    unrestricted = parse_public(tpm_public("ecc256:ecdsa-sha256", key,
                                           AK_ATTRS & ~TPMA_OBJECT.RESTRICTED))
    data, sig = _quote(key, SHA256_PCRS)
    with pytest.raises(UnsuitableKey, match="not a restricted signing key"):
        verify_quote(unrestricted, data, sig, SHA256_PCRS)


def test_verify_certify(ecc_ak, rsa_key):
    key, ak = ecc_ak
    bind = parse_public(tpm_public("rsa2048", rsa_key, TPMA_OBJECT.DECRYPT | TPMA_OBJECT.FIXEDTPM))
    data = attest_bytes("certify", b"q" * 32, name=bind.name)
    sig = sign(key, data)
    attest = verify_certify(ak, data, sig, bind, qualifying_data=b"q" * 32)
    assert attest.attested.name == bind.name
    with pytest.raises(AttestationMismatch, match="extraData"):
        verify_certify(ak, data, sig, bind, qualifying_data=b"r" * 32)
    with pytest.raises(AttestationMismatch, match="certified Name"):
        verify_certify(ak, data, sig, ak, qualifying_data=b"q" * 32)
    quote, quote_sig = _quote(key, SHA256_PCRS, nonce=b"q" * 32)
    with pytest.raises(AttestationMismatch, match="type QUOTE, expected CERTIFY"):
        verify_certify(ak, quote, quote_sig, bind, qualifying_data=b"q" * 32)
    tampered = bytearray(data)
    tampered[-1] ^= 1
    with pytest.raises(SignatureInvalid):
        verify_certify(ak, bytes(tampered), sig, bind, qualifying_data=b"q" * 32)


# ---------------------------------------------------------------- PolicyPCR

def test_policy_pcr_digest_by_hand():
    selection = PCRSelection.from_spec("sha256:0,1,2,3,4,5,6,7")
    values = SHA256_PCRS
    pcrs = b"".join(values[HashAlg.SHA256][i] for i in range(8))
    expected = hashlib.sha256(bytes(32) + b"\x00\x00\x01\x7f"
                              + bytes.fromhex("00000001000b03ff0000")
                              + hashlib.sha256(pcrs).digest()).digest()
    assert policy_pcr_digest(selection, values) == expected
    chained = policy_pcr_digest(selection, values, start=expected)
    assert chained != expected and len(chained) == 32
    sha1_policy = policy_pcr_digest(selection, values, policy_alg=HashAlg.SHA1)
    assert len(sha1_policy) == 20
    with pytest.raises(EvidenceError, match="start digest has 20 bytes"):
        policy_pcr_digest(selection, values, start=bytes(20))
    with pytest.raises(MissingPCRValue):
        policy_pcr_digest(PCRSelection.from_spec("sha1:0"), values)


# ---------------------------------------------------------------- against a real TPM (swtpm)

def _free_port_pair() -> int:
    import socket
    for _ in range(20):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port pair")


@pytest.fixture(scope="module")
def esapi(tmp_path_factory):
    """An ESAPI context on a private swtpm (fresh state, no EK needed here)."""
    import shutil
    import subprocess
    import time

    if shutil.which("swtpm") is None:
        pytest.skip("swtpm is not installed")
    from tpm2_pytss import ESAPI, TCTILdr

    state = tmp_path_factory.mktemp("swtpm")
    port = _free_port_pair()
    process = subprocess.Popen(
        ["swtpm", "socket", "--tpm2", "--tpmstate", f"dir={state}",
         "--server", f"type=tcp,port={port},bindaddr=127.0.0.1",
         "--ctrl", f"type=tcp,port={port + 1},bindaddr=127.0.0.1",
         "--flags", "not-need-init,startup-clear"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        context = None
        for _ in range(100):
            try:
                context = ESAPI(TCTILdr("swtpm", f"port={port}"))
                break
            except Exception:
                time.sleep(0.05)
        if context is None:
            pytest.fail("swtpm did not come up")
        yield context
        context.close()
    finally:
        process.terminate()
        process.wait(timeout=10)


def _pcr_values(esapi, spec: str) -> dict[HashAlg, dict[int, bytes]]:
    values: dict[HashAlg, dict[int, bytes]] = {}
    for alg, pcrs in PCRSelection.from_spec(spec):
        for start in range(0, len(pcrs), 8):   # TPM2_PCR_Read returns at most 8 values
            chunk = pcrs[start:start + 8]
            selection = TPML_PCR_SELECTION.parse(f"{alg.bank_name}:{','.join(map(str, chunk))}")
            _, _, digests = esapi.pcr_read(selection)
            values.setdefault(alg, {}).update(
                {index: bytes(digest) for index, digest in zip(chunk, digests, strict=True)})
    return values


@pytest.mark.swtpm
def test_swtpm_policy_pcr_certify_and_quotes(esapi):
    """PolicyPCR, Certify of a PCR-locked bind key, and ECDSA / RSA-PSS quotes from swtpm."""
    from tpm2_pytss.constants import ESYS_TR, TPM2_SE
    from tpm2_pytss.types import TPM2B_SENSITIVE_CREATE, TPMT_SYM_DEF

    esapi.pcr_extend(ESYS_TR.PCR7, _digest_values({"sha256": b"\x07" * 32, "sha1": b"\x07" * 20}))
    spec = "sha256:0,1,2,3,4,5,6,7"
    values = _pcr_values(esapi, spec)
    selection = PCRSelection.from_spec(spec)

    session = esapi.start_auth_session(
        ESYS_TR.NONE, ESYS_TR.NONE, TPM2_SE.TRIAL, TPMT_SYM_DEF(algorithm=TPM2_ALG_NULL),
        TPM2_ALG_SHA256)
    esapi.policy_pcr(session, TPM2B_DIGEST(), TPML_PCR_SELECTION.parse(spec))
    tpm_policy = bytes(esapi.policy_get_digest(session))
    esapi.flush_context(session)
    assert policy_pcr_digest(selection, values) == tpm_policy

    srk, *_ = esapi.create_primary(TPM2B_SENSITIVE_CREATE(), "ecc256:aes128cfb")
    ak_handle, ak_public, *_ = esapi.create_primary(
        TPM2B_SENSITIVE_CREATE(), _template("ecc256:ecdsa-sha256:null", AK_ATTRS),
        primary_handle=ESYS_TR.ENDORSEMENT)
    bind_attrs = (TPMA_OBJECT.FIXEDTPM | TPMA_OBJECT.FIXEDPARENT | TPMA_OBJECT.DECRYPT
                  | TPMA_OBJECT.SENSITIVEDATAORIGIN | TPMA_OBJECT.NODA)
    private, bind_public, *_ = esapi.create(
        srk, TPM2B_SENSITIVE_CREATE(), _template("ecc256:null", bind_attrs, tpm_policy))
    bind_handle = esapi.load(srk, private, bind_public)

    ak = parse_public(ak_public.marshal())
    bind = parse_public(bind_public.marshal())
    assert bind.auth_policy == policy_pcr_digest(selection, values)
    assert bind.name == bytes(esapi.tr_get_name(bind_handle))

    qualifying = hashlib.sha256(b"launch").digest()
    certify_info, signature = esapi.certify(
        bind_handle, ak_handle, TPM2B_DATA(qualifying), _null_scheme())
    attest = verify_certify(ak, bytes(certify_info.marshal()[2:]), signature.marshal(), bind,
                            qualifying_data=qualifying)
    assert ak.name == bytes(esapi.tr_get_name(ak_handle))
    # qualifiedSigner = QN(AK) = nameAlg || H(QN(endorsement hierarchy) || Name(AK))
    endorsement = struct.pack(">I", 0x4000000B)
    assert attest.qualified_signer == b"\x00\x0b" + hashlib.sha256(endorsement + ak.name).digest()

    quote_spec = "sha256:0,1,2,3,4,5,6,7+sha1:7"
    quoted, quote_sig = esapi.quote(ak_handle, TPML_PCR_SELECTION.parse(quote_spec),
                                    TPM2B_DATA(b"fresh nonce"), _null_scheme())
    quote_values = _pcr_values(esapi, quote_spec)
    verify_quote(ak, bytes(quoted.marshal()[2:]), quote_sig.marshal(), quote_values,
                 nonce=b"fresh nonce")
    quote_values[HashAlg.SHA1][7] = bytes(20)
    with pytest.raises(PCRDigestMismatch):
        verify_quote(ak, bytes(quoted.marshal()[2:]), quote_sig.marshal(), quote_values)

    for handle in (srk, bind_handle, ak_handle):   # swtpm holds three transient objects
        esapi.flush_context(handle)
    pss_handle, pss_public, *_ = esapi.create_primary(
        TPM2B_SENSITIVE_CREATE(), _template("rsa2048:rsapss-sha256:null", AK_ATTRS),
        primary_handle=ESYS_TR.ENDORSEMENT)
    quoted, quote_sig = esapi.quote(pss_handle, TPML_PCR_SELECTION.parse(spec),
                                    TPM2B_DATA(b"n2"), _null_scheme())
    assert parse_signature(quote_sig.marshal()).algorithm is TPMAlg.RSAPSS
    verify_quote(parse_public(pss_public.marshal()), bytes(quoted.marshal()[2:]),
                 quote_sig.marshal(), values, nonce=b"n2")
    esapi.flush_context(pss_handle)


def _digest_values(values: dict[str, bytes]):
    from tpm2_pytss.types import TPML_DIGEST_VALUES, TPMT_HA, TPMU_HA

    algs = {"sha256": TPM2_ALG_SHA256, "sha1": TPM2_ALG_SHA1}
    return TPML_DIGEST_VALUES([
        TPMT_HA(hashAlg=algs[name], digest=TPMU_HA(**{name: digest}))
        for name, digest in values.items()])


def _template(spec: str, attrs, auth_policy: bytes = b"") -> TPM2B_PUBLIC:
    return TPM2B_PUBLIC(TPMT_PUBLIC.parse(spec, objectAttributes=attrs, authPolicy=auth_policy))


def _null_scheme():
    from tpm2_pytss.types import TPMT_SIG_SCHEME

    return TPMT_SIG_SCHEME(scheme=TPM2_ALG_NULL)


TPM2_ALG_NULL = 0x0010
TPM2_ALG_SHA1 = 0x0004
TPM2_ALG_SHA256 = 0x000B
