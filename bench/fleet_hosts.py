"""Simulated compute hosts for fleet-scale benchmarks: software keys standing in for TPMs.

Ten thousand swtpm processes cannot run on one machine, so a
:class:`SoftwareTPM` offers the methods of ``TPMDevice`` that enrollment
(``compute.enrollment.enroll_host``) and continuous attestation
(``compute.host_monitor.HostMonitor``) call, with software P-256 keys:
an EK made from the TCG EK-ECC256 template and certified by a bench
:class:`VendorCA` (the operator lists it in ``[enrollment] ek_ca_files``, as
for any TPM vendor), an AK made from the product's AK template, TPM2_Quote
marshalled as TPMS_ATTEST / TPMT_SIGNATURE over the PCR values a real firmware
event log replays to, and ActivateCredential done as a TPM does it. The TTP
runs every one of its checks on this evidence unchanged.

:func:`attest_round` is one HostMonitor round over a fresh TLS connection
(challenge, quote over its nonce, attestation) on asyncio streams, so one
process can drive thousands of hosts; :func:`host_headers` is the one place
where a host's credentials go once the TTP authenticates hosts.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import json
import pathlib
import ssl
import struct
import time
import zlib
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.decrepit.ciphers.modes import CFB  # TPM credential protection
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.x509.oid import NameOID
from tpm2_pytss.internal.crypto import _check_hmac, _decrypt, _kdfa, kdfe
from tpm2_pytss.types import TPM2B_ENCRYPTED_SECRET, TPM2B_ID_OBJECT, TPM2B_PUBLIC
from tpm2_pytss.utils import ek_template

from trusted_launch.evidence.algorithms import HashAlg
from trusted_launch.evidence.eventlog import parse_event_log, replay
from trusted_launch.evidence.tpm2 import (
    TPM_GENERATED_VALUE,
    AttestType,
    PCRSelection,
    TPMAlg,
    marshal_pcr_selection,
    pcr_digest,
    with_initial_values,
)
from trusted_launch.tpm.keys import AttestationKey
from trusted_launch.tpm.templates import ak_template

EK_TYPE = "EK-ECC256"
AK_HANDLE = 0x81010002  # where a real host persists its AK (reported, never used)
COORDINATE = 32  # P-256
TIMEOUT_S = 10.0  # TTPClient's default timeout


class SoftwareTPMError(Exception):
    """A credential challenge this software TPM cannot activate."""


def _tpm2b(data: bytes) -> bytes:
    return struct.pack(">H", len(data)) + data


def _coordinates(key: ec.EllipticCurvePublicKey) -> tuple[bytes, bytes]:
    numbers = key.public_numbers()
    return numbers.x.to_bytes(COORDINATE, "big"), numbers.y.to_bytes(COORDINATE, "big")


def _public_area(template: TPM2B_PUBLIC, key: ec.EllipticCurvePublicKey) -> TPM2B_PUBLIC:
    """``template`` with ``key`` as its unique point (what TPM2_Create(Primary) returns)."""
    public = TPM2B_PUBLIC(publicArea=template.publicArea)
    public.publicArea.unique.ecc.x, public.publicArea.unique.ecc.y = _coordinates(key)
    return public


class VendorCA:
    """A TPM vendor's EK certificate CA, played by the bench (self-signed P-256 root)."""

    def __init__(self, name: str = "trusted-launch bench TPM vendor CA") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(minutes=5))
                     .not_valid_after(now + datetime.timedelta(days=2))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None),
                                    critical=True)
                     .sign(self.key, hashes.SHA256()))

    def write(self, path: pathlib.Path) -> pathlib.Path:
        """The CA certificate as PEM at ``path`` (for ``[enrollment] ek_ca_files``)."""
        path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        return path

    def issue_ek_certificate(self, ek: ec.EllipticCurvePublicKey) -> bytes:
        """A DER EK certificate for ``ek`` (as a TPM holds it in NV index 0x01c0000a)."""
        now = datetime.datetime.now(datetime.UTC)
        return (x509.CertificateBuilder().subject_name(x509.Name([]))
                .issuer_name(self.cert.subject).public_key(ek)
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=2))
                .add_extension(x509.SubjectAlternativeName([x509.DirectoryName(x509.Name([
                    x509.NameAttribute(NameOID.COMMON_NAME, "bench TPM")]))]), critical=True)
                .sign(self.key, hashes.SHA256())
                .public_bytes(serialization.Encoding.DER))


@dataclass
class FirmwareLog:
    """A real firmware event log, its base64 and its replayed PCR values (shared by hosts)."""

    data: bytes
    b64: str = field(init=False, repr=False)
    values: dict = field(init=False, repr=False)
    _digests: dict[str, bytes] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.b64 = base64.b64encode(self.data).decode("ascii")
        self.values = replay(parse_event_log(self.data))

    @classmethod
    def read(cls, path: pathlib.Path) -> FirmwareLog:
        return cls(path.read_bytes())

    def quoted_digest(self, selection: PCRSelection) -> bytes:
        """TPMS_QUOTE_INFO.pcrDigest (SHA-256) of ``selection`` in the replayed state."""
        key = str(selection)
        if key not in self._digests:
            values = with_initial_values(selection, self.values)
            self._digests[key] = pcr_digest(selection, values, HashAlg.SHA256)
        return self._digests[key]


class SoftwareTPM:
    """The TPMDevice methods enrollment and HostMonitor use, with software keys.

    Its PCRs hold what ``log`` replays to; a quote over any selection of them
    is marshalled and signed as TPM2_Quote with an ECDSA-SHA256 AK returns it.
    """

    def __init__(self, log: FirmwareLog, vendor: VendorCA) -> None:
        self.log = log
        self._ek = ec.generate_private_key(ec.SECP256R1())
        self._ak = ec.generate_private_key(ec.SECP256R1())
        self._ek_public = _public_area(
            TPM2B_PUBLIC(publicArea=ek_template.lookup(EK_TYPE).template.publicArea),
            self._ek.public_key())
        ak_public = _public_area(ak_template(), self._ak.public_key())
        self._ak_key = AttestationKey(public=ak_public.marshal(),
                                      name=bytes(ak_public.get_name()), handle=AK_HANDLE)
        self._ek_certificate = vendor.issue_ek_certificate(self._ek.public_key())
        self._signer = _tpm2b(b"\x00\x0b" + hashlib.sha256(self._ak_key.name).digest())
        self._started = time.monotonic()
        self._quote_infos: dict[str, bytes] = {}

    # enrollment (compute.enrollment.enroll_host) -------------------------------------

    def ek_certificate(self) -> bytes:
        return self._ek_certificate

    def ek_public(self) -> bytes:
        return self._ek_public.marshal()

    def ensure_attestation_key(self) -> AttestationKey:
        return self._ak_key

    def activate_credential(self, credential_blob: bytes, encrypted_secret: bytes) -> bytes:
        """TPM2_ActivateCredential: the secret, if the credential names this AK; else error."""
        try:
            blob, _ = TPM2B_ID_OBJECT.unmarshal(credential_blob)
            point, _ = TPM2B_ENCRYPTED_SECRET.unmarshal(encrypted_secret)
            seed = self._seed(bytes(point))
            integrity_size = struct.unpack(">H", bytes(blob)[:2])[0]
            integrity = bytes(blob)[2:2 + integrity_size]
            encrypted = bytes(blob)[2 + integrity_size:]
            name = self._ak_key.name
            hmac_key = _kdfa(TPMAlg.SHA256, seed, b"INTEGRITY", b"", b"", 256)
            _check_hmac(hashes.SHA256, hmac_key, encrypted, name, integrity)
            symmetric = _kdfa(TPMAlg.SHA256, seed, b"STORAGE", name, b"", 128)
            plain = _decrypt(algorithms.AES, CFB, symmetric, encrypted)
        except Exception as exc:  # tpm2_pytss and cryptography raise assorted types
            raise SoftwareTPMError(f"ActivateCredential failed: {type(exc).__name__}") from None
        size = struct.unpack(">H", plain[:2])[0]
        return plain[2:2 + size]

    def _seed(self, point: bytes) -> bytes:
        """The credential seed from the TPMS_ECC_POINT of an ECC-encrypted secret."""
        x_size = struct.unpack(">H", point[:2])[0]
        x = point[2:2 + x_size]
        y = point[4 + x_size:]
        peer = ec.EllipticCurvePublicNumbers(int.from_bytes(x, "big"), int.from_bytes(y, "big"),
                                             ec.SECP256R1()).public_key()
        shared = self._ek.exchange(ec.ECDH(), peer)
        own_x, _ = _coordinates(self._ek.public_key())
        return kdfe(TPMAlg.SHA256, shared, b"IDENTITY\x00", x, own_x, 256)

    # continuous attestation (compute.host_monitor.HostMonitor) -----------------------

    def quote(self, selection: PCRSelection | str, nonce: bytes) -> tuple[bytes, bytes]:
        """TPM2_Quote with the AK: (TPMS_ATTEST, TPMT_SIGNATURE) marshalled."""
        quote_info = self._quote_info(selection)
        clock = int((time.monotonic() - self._started) * 1000)
        attest = b"".join((
            struct.pack(">IH", TPM_GENERATED_VALUE, AttestType.QUOTE), self._signer,
            _tpm2b(nonce), struct.pack(">QIIB", clock, 1, 0, 1), struct.pack(">Q", 0x20240125),
            quote_info))
        r, s = decode_dss_signature(self._ak.sign(attest, ec.ECDSA(hashes.SHA256())))
        signature = struct.pack(">HH", TPMAlg.ECDSA, TPMAlg.SHA256) + _tpm2b(
            r.to_bytes(COORDINATE, "big")) + _tpm2b(s.to_bytes(COORDINATE, "big"))
        return attest, signature

    def _quote_info(self, selection: PCRSelection | str) -> bytes:
        """The marshalled TPMS_QUOTE_INFO of ``selection``, computed once per selection."""
        key = str(selection)
        if key not in self._quote_infos:
            parsed = selection if isinstance(selection, PCRSelection) \
                else PCRSelection.from_spec(selection)
            self._quote_infos[key] = (marshal_pcr_selection(parsed)
                                      + _tpm2b(self.log.quoted_digest(parsed)))
        return self._quote_infos[key]


@dataclass
class FleetHost:
    """One simulated host: its name, software TPM and the AK certificate enrollment gave it."""

    name: str
    tpm: SoftwareTPM
    selection: str
    ak_certificate: str = ""
    token: str = field(default="", repr=False)  # the host's TTP API token (role host)

    def attestation_body(self, nonce: bytes) -> bytes:
        """The JSON body HostMonitor sends for ``nonce`` (no IMA list configured)."""
        attest, signature = self.tpm.quote(self.selection, nonce)
        return json.dumps({"nonce": _b64(nonce), "quote": _b64(attest),
                           "signature": _b64(signature),
                           "event_log": self.tpm.log.b64}).encode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def host_headers(host: FleetHost) -> dict[str, str]:
    """Credentials a host presents on each request: the one place they are added.

    Its TTP API token (role host, made by the operator for this host), as
    TTPClient sends it.
    """
    return {"X-Auth-Token": host.token} if host.token else {}


@dataclass(frozen=True)
class RoundResult:
    """One attestation round as the host saw it (times from time.time())."""

    host: str
    started: float
    ended: float
    attest_ms: float
    ok: bool
    check: str | None  # the TTP's check, or a transport failure
    profile: str | None = None
    checked_at: float | None = None


class HTTPError(Exception):
    """The TTP answered something other than a JSON object."""


async def _post(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, path: str,
                body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    """POST ``body`` on an open keep-alive connection: (status, JSON object)."""
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
                 f"\r\nContent-Length: {len(body)}\r\n{head}\r\n".encode() + body)
    status_line = await reader.readline()
    try:
        status = int(status_line.split(b" ", 2)[1])
    except (IndexError, ValueError):
        raise HTTPError(f"bad status line {status_line[:40]!r}") from None
    length = None
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length is None:
        raise HTTPError("answer without Content-Length")
    answer = json.loads(await reader.readexactly(length))
    if not isinstance(answer, dict):
        raise HTTPError("answer is not a JSON object")
    return status, answer


def _check(status: int, answer: dict) -> str:
    error = answer.get("error") if isinstance(answer.get("error"), dict) else {}
    return str(error.get("check") or f"http_{status}")


def loopback_source(name: str) -> str:
    """A loopback address of this host's own (all of 127/8 is local on Linux).

    Real hosts connect from their own addresses; from one address the simulated
    fleet would meet the TTP's per-address connection cap instead of its capacity.
    """
    number = zlib.crc32(name.encode())
    return f"127.{1 + number % 254}.{(number >> 8) & 255}.{1 + (number >> 16) % 254}"


async def attest_round(host: FleetHost, port: int, context: ssl.SSLContext,
                       timeout: float = TIMEOUT_S) -> RoundResult:
    """One HostMonitor round on a fresh TLS connection: challenge, quote, attestation."""
    started = time.time()
    attest_ms = 0.0
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=context, server_hostname="127.0.0.1",
                local_addr=(loopback_source(host.name), 0))
            try:
                headers = host_headers(host)
                status, challenge = await _post(
                    reader, writer, f"/v1/hosts/{host.name}/challenges", b"{}", headers)
                if status != 201:
                    return RoundResult(host.name, started, time.time(), 0.0, False,
                                       _check(status, challenge))
                body = host.attestation_body(base64.b64decode(challenge["nonce"]))
                sent = time.perf_counter()
                status, answer = await _post(
                    reader, writer, f"/v1/hosts/{host.name}/attestations", body, headers)
                attest_ms = (time.perf_counter() - sent) * 1000
            finally:
                writer.close()
    except TimeoutError:
        return RoundResult(host.name, started, time.time(), attest_ms, False, "timeout")
    except (OSError, HTTPError, ValueError, KeyError, asyncio.IncompleteReadError) as exc:
        return RoundResult(host.name, started, time.time(), attest_ms, False,
                           f"transport:{type(exc).__name__}")
    if status != 200:
        return RoundResult(host.name, started, time.time(), attest_ms, False,
                           _check(status, answer))
    return RoundResult(host.name, started, time.time(), attest_ms, True, answer.get("check"),
                       answer.get("profile"), answer.get("checked_at"))
