"""TPM2B_PUBLIC / TPMT_PUBLIC: object public areas, their Names and keys."""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric import ec, rsa

from trusted_launch.evidence.algorithms import HashAlg
from trusted_launch.evidence.binary import Reader
from trusted_launch.evidence.errors import ParseError, UnsuitableKey
from trusted_launch.evidence.tpm2.algs import TPMAlg, read_alg, read_hash_alg

A = TPMAlg


class ObjectType(enum.IntEnum):
    """TPMI_ALG_PUBLIC."""

    RSA = 0x0001
    KEYEDHASH = 0x0008
    ECC = 0x0023
    SYMCIPHER = 0x0025


class ObjectAttributes(enum.IntFlag):
    """TPMA_OBJECT bits."""

    FIXED_TPM = 1 << 1
    ST_CLEAR = 1 << 2
    FIXED_PARENT = 1 << 4
    SENSITIVE_DATA_ORIGIN = 1 << 5
    USER_WITH_AUTH = 1 << 6
    ADMIN_WITH_POLICY = 1 << 7
    NO_DA = 1 << 10
    ENCRYPTED_DUPLICATION = 1 << 11
    RESTRICTED = 1 << 16
    DECRYPT = 1 << 17
    SIGN_ENCRYPT = 1 << 18
    X509_SIGN = 1 << 19
    SIGN = SIGN_ENCRYPT


_DEFINED_ATTRIBUTES = sum(int(flag) for flag in ObjectAttributes)  # IntFlag ~ would not help


class ECCCurve(enum.IntEnum):
    """TPM_ECC_CURVE values with a cryptography curve."""

    NIST_P256 = 0x0003
    NIST_P384 = 0x0004
    NIST_P521 = 0x0005

    def curve(self) -> ec.EllipticCurve:
        return {ECCCurve.NIST_P256: ec.SECP256R1, ECCCurve.NIST_P384: ec.SECP384R1,
                ECCCurve.NIST_P521: ec.SECP521R1}[self]()

    @property
    def size(self) -> int:
        return (self.curve().key_size + 7) // 8


@dataclass(frozen=True)
class SymmetricDef:
    """TPMT_SYM_DEF_OBJECT (algorithm NULL: no symmetric protection)."""

    algorithm: TPMAlg
    key_bits: int = 0
    mode: TPMAlg | None = None


@dataclass(frozen=True)
class Scheme:
    """A signing, encryption or KDF scheme with its hash (TPMT_*_SCHEME)."""

    algorithm: TPMAlg
    hash_alg: HashAlg | None = None
    count: int | None = None   # ECDAA only
    kdf: TPMAlg | None = None  # XOR only

    @property
    def is_null(self) -> bool:
        return self.algorithm is TPMAlg.NULL


@dataclass(frozen=True)
class RSAParameters:
    symmetric: SymmetricDef
    scheme: Scheme
    key_bits: int
    exponent: int   # as marshalled: 0 means the default 65537

    @property
    def public_exponent(self) -> int:
        return self.exponent or 65537


@dataclass(frozen=True)
class ECCParameters:
    symmetric: SymmetricDef
    scheme: Scheme
    curve: ECCCurve
    kdf: Scheme


@dataclass(frozen=True)
class KeyedHashParameters:
    scheme: Scheme


@dataclass(frozen=True)
class SymCipherParameters:
    symmetric: SymmetricDef


Parameters = RSAParameters | ECCParameters | KeyedHashParameters | SymCipherParameters


@dataclass(frozen=True)
class PublicArea:
    """A decoded TPMT_PUBLIC; ``raw`` is its marshalled bytes (no size prefix)."""

    type: ObjectType
    name_alg: HashAlg
    object_attributes: ObjectAttributes
    auth_policy: bytes
    parameters: Parameters
    unique: bytes | tuple[bytes, bytes]   # RSA modulus / ECC (x, y) / digest
    raw: bytes = field(repr=False)

    @property
    def name(self) -> bytes:
        """TPM Name: nameAlg (u16 big-endian) || H_nameAlg(TPMT_PUBLIC)."""
        return struct.pack(">H", self.name_alg) + self.name_alg.digest(self.raw)

    def marshal(self, *, tpm2b: bool = True) -> bytes:
        return struct.pack(">H", len(self.raw)) + self.raw if tpm2b else self.raw

    def public_key(self) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
        """The asymmetric public key (RSA or ECC objects only)."""
        params = self.parameters
        if isinstance(params, RSAParameters):
            assert isinstance(self.unique, bytes)
            return rsa.RSAPublicNumbers(
                params.public_exponent, int.from_bytes(self.unique, "big")).public_key()
        if isinstance(params, ECCParameters):
            x, y = self.unique
            return ec.EllipticCurvePublicNumbers(
                int.from_bytes(x, "big"), int.from_bytes(y, "big"),
                params.curve.curve()).public_key()
        raise UnsuitableKey(f"a {self.type.name} object has no asymmetric public key")


def parse_public(data: bytes, *, tpm2b: bool = True) -> PublicArea:
    """Unmarshal a TPM2B_PUBLIC (``tpm2b=True``) or a bare TPMT_PUBLIC."""
    if not tpm2b:
        return _parse_tpmt(Reader(data, "TPMT_PUBLIC"), data)
    outer = Reader(data, "TPM2B_PUBLIC")
    size = outer.u16be("TPM2B_PUBLIC.size")
    if size == 0:
        raise outer.error("TPM2B_PUBLIC is empty", 0)
    inner = outer.sub(size, "TPM2B_PUBLIC")
    public = _parse_tpmt(inner, data)
    outer.expect_end()
    return public


def _parse_tpmt(reader: Reader, data: bytes) -> PublicArea:
    start = reader.offset
    obj_type = ObjectType(read_alg(reader, "type", set(map(TPMAlg, ObjectType))))
    name_alg = read_hash_alg(reader, "nameAlg")
    attributes = _read_attributes(reader)
    policy_offset = reader.offset
    auth_policy = reader.tpm2b("authPolicy")
    if auth_policy and len(auth_policy) != name_alg.digest_size:
        raise reader.error(f"authPolicy has {len(auth_policy)} bytes, nameAlg "
                           f"{name_alg.bank_name} needs {name_alg.digest_size}", policy_offset)
    parameters = _PARAMETER_READERS[obj_type](reader)
    unique_offset = reader.offset
    unique = _read_unique(reader, obj_type)
    end = reader.offset
    reader.expect_end()
    public = PublicArea(obj_type, name_alg, attributes, auth_policy, parameters, unique,
                        bytes(data[start:end]))
    _check_key(public, reader, unique_offset)
    return public


def _read_attributes(reader: Reader) -> ObjectAttributes:
    offset = reader.offset
    value = reader.u32be("objectAttributes")
    reserved = value & ~_DEFINED_ATTRIBUTES
    if reserved:
        raise reader.error(f"objectAttributes has reserved bits 0x{reserved:08x} set", offset)
    return ObjectAttributes(value)


_SYMMETRIC = {A.NULL, A.AES, A.SM4, A.CAMELLIA}
_MODES = {A.CTR, A.OFB, A.CBC, A.CFB, A.ECB, A.NULL}


def _read_symmetric(reader: Reader) -> SymmetricDef:
    algorithm = read_alg(reader, "symmetric.algorithm", _SYMMETRIC)
    if algorithm is A.NULL:
        return SymmetricDef(algorithm)
    key_bits = reader.u16be("symmetric.keyBits")
    return SymmetricDef(algorithm, key_bits, read_alg(reader, "symmetric.mode", _MODES))


_RSA_SCHEMES = {A.NULL, A.RSASSA, A.RSAPSS, A.RSAES, A.OAEP}
_ECC_SCHEMES = {A.NULL, A.ECDSA, A.ECDH, A.ECDAA, A.SM2, A.ECSCHNORR, A.ECMQV}
_KDF_SCHEMES = {A.NULL, A.MGF1, A.KDF1_SP800_56A, A.KDF2, A.KDF1_SP800_108}
_KEYEDHASH_SCHEMES = {A.NULL, A.HMAC, A.XOR}


def _read_scheme(reader: Reader, field: str, allowed: set[TPMAlg]) -> Scheme:
    algorithm = read_alg(reader, field, allowed)
    if algorithm in (A.NULL, A.RSAES):
        return Scheme(algorithm)
    hash_alg = read_hash_alg(reader, f"{field}.hashAlg")
    if algorithm is A.ECDAA:
        return Scheme(algorithm, hash_alg, reader.u16be(f"{field}.count"))
    if algorithm is A.XOR:
        return Scheme(algorithm, hash_alg, kdf=read_alg(reader, f"{field}.kdf", _KDF_SCHEMES))
    return Scheme(algorithm, hash_alg)


def _read_kdf(reader: Reader) -> Scheme:
    return _read_scheme(reader, "kdf", _KDF_SCHEMES)


def _read_rsa(reader: Reader) -> RSAParameters:
    symmetric = _read_symmetric(reader)
    scheme = _read_scheme(reader, "scheme", _RSA_SCHEMES)
    offset = reader.offset
    key_bits = reader.u16be("keyBits")
    if key_bits not in (1024, 2048, 3072, 4096):
        raise reader.error(f"RSA keyBits {key_bits} is not supported", offset)
    return RSAParameters(symmetric, scheme, key_bits, reader.u32be("exponent"))


def _read_ecc(reader: Reader) -> ECCParameters:
    symmetric = _read_symmetric(reader)
    scheme = _read_scheme(reader, "scheme", _ECC_SCHEMES)
    offset = reader.offset
    curve_id = reader.u16be("curveID")
    if curve_id not in ECCCurve._value2member_map_:
        raise ParseError(reader.what, offset, f"ECC curve 0x{curve_id:04x} is not supported")
    return ECCParameters(symmetric, scheme, ECCCurve(curve_id), _read_kdf(reader))


def _read_keyedhash(reader: Reader) -> KeyedHashParameters:
    return KeyedHashParameters(_read_scheme(reader, "scheme", _KEYEDHASH_SCHEMES))


def _read_symcipher(reader: Reader) -> SymCipherParameters:
    return SymCipherParameters(_read_symmetric(reader))


_PARAMETER_READERS = {
    ObjectType.RSA: _read_rsa,
    ObjectType.ECC: _read_ecc,
    ObjectType.KEYEDHASH: _read_keyedhash,
    ObjectType.SYMCIPHER: _read_symcipher,
}


def _read_unique(reader: Reader, obj_type: ObjectType) -> bytes | tuple[bytes, bytes]:
    if obj_type is ObjectType.ECC:
        return reader.tpm2b("unique.x"), reader.tpm2b("unique.y")
    return reader.tpm2b("unique")


def _check_key(public: PublicArea, reader: Reader, offset: int) -> None:
    """Reject RSA moduli of the wrong size and ECC points off their curve."""
    params = public.parameters
    if isinstance(params, RSAParameters):
        modulus = public.unique
        assert isinstance(modulus, bytes)
        if len(modulus) * 8 != params.key_bits or not modulus[0] & 0x80:
            raise ParseError(reader.what, offset, f"RSA modulus of {len(modulus)} bytes "
                             f"does not match keyBits {params.key_bits}")
    elif isinstance(params, ECCParameters):
        x, y = public.unique
        if len(x) > params.curve.size or len(y) > params.curve.size:
            raise ParseError(reader.what, offset, f"ECC point coordinates longer than "
                             f"{params.curve.size} bytes for {params.curve.name}")
    else:
        return
    try:
        public.public_key()
    except ValueError as exc:
        raise ParseError(reader.what, offset, f"invalid public key: {exc}") from None
