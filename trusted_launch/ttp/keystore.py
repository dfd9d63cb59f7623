"""The TTP's private keys on disk: HPKE token keys (X25519) and the attestation CA.

Every private key file is written atomically with mode 0600. Token keys live
in ``key_dir`` as ``token-<id>.key`` (raw 32-byte X25519 private key) next to
``index.json`` (order and retirement times: the first entry is the current
key; a previous key stays usable until ``retired_at + overlap``).
"""

from __future__ import annotations

import base64
import datetime
import json
import os
import pathlib
import secrets
import tempfile
import time
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.x509.oid import NameOID

from trusted_launch.crypto.token import key_id_for

TOKEN_KEY_ALGORITHM = "hpke-x25519-hkdf-sha256-aes128gcm"  # noqa: S105 - a name
_INDEX = "index.json"


class KeyStoreError(Exception):
    """The key directory or a key file is missing, unreadable or inconsistent."""


def write_private_file(path: pathlib.Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _raw_public(private_key: X25519PrivateKey) -> bytes:
    return private_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def token_key_id(private_key: X25519PrivateKey) -> str:
    """A key's id as the token format names it (derived from the public key)."""
    return key_id_for(private_key.public_key())


@dataclass(frozen=True)
class TokenKey:
    """One token key pair and when it stops being accepted (None: current key)."""

    key_id: str
    private_key: X25519PrivateKey
    created_at: int
    not_after: int | None

    def __repr__(self) -> str:
        return f"TokenKey(key_id={self.key_id!r}, not_after={self.not_after!r})"

    def publication(self) -> dict:
        """The entry of GET /v1/keys for this key."""
        return {"id": self.key_id, "algorithm": TOKEN_KEY_ALGORITHM,
                "public_key": _b64url(_raw_public(self.private_key)),
                "not_after": self.not_after}


class TokenKeyStore:
    """Token key pairs in a directory; the current key plus still-overlapping previous ones."""

    def __init__(self, key_dir: str | os.PathLike, overlap: int) -> None:
        self.key_dir = pathlib.Path(key_dir)
        self.overlap = overlap
        self._loaded: dict[str, X25519PrivateKey] = {}  # a key id names one key for ever
        self._index: tuple[tuple, list[dict]] | None = None  # (file identity, entries)

    def _read_index(self) -> list[dict]:
        """The index entries (copies); re-read only when the file was replaced or changed."""
        path = self.key_dir / _INDEX
        try:
            stat = path.stat()
        except FileNotFoundError:
            return []
        identity = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if self._index is None or self._index[0] != identity:
            self._index = (identity, self._parse_index(path))
        return [dict(entry) for entry in self._index[1]]

    @staticmethod
    def _parse_index(path: pathlib.Path) -> list[dict]:
        try:
            entries = json.loads(path.read_text())
            return [{"id": str(e["id"]), "created_at": int(e["created_at"]),
                     "retired_at": None if e.get("retired_at") is None else int(e["retired_at"])}
                    for e in entries]
        except (ValueError, TypeError, KeyError) as exc:
            raise KeyStoreError(f"{path}: unreadable key index ({type(exc).__name__})") from exc

    def _write_index(self, entries: list[dict]) -> None:
        write_private_file(self.key_dir / _INDEX, json.dumps(entries, indent=1).encode())

    def _load_key(self, key_id: str) -> X25519PrivateKey:
        if key_id in self._loaded:
            return self._loaded[key_id]
        path = self.key_dir / f"token-{key_id}.key"
        try:
            raw = path.read_bytes()
            key = X25519PrivateKey.from_private_bytes(raw)
        except (OSError, ValueError) as exc:
            raise KeyStoreError(f"{path}: cannot load token key ({type(exc).__name__})") from exc
        self._loaded[key_id] = key
        return key

    def _not_after(self, entry: dict) -> int | None:
        retired = entry["retired_at"]
        return None if retired is None else retired + self.overlap

    def keys(self, now: float | None = None) -> list[TokenKey]:
        """Usable keys, current first; previous keys whose overlap ended are left out."""
        now = time.time() if now is None else now
        result = []
        for entry in self._read_index():
            not_after = self._not_after(entry)
            if not_after is not None and not_after < now:
                continue
            result.append(TokenKey(entry["id"], self._load_key(entry["id"]),
                                   entry["created_at"], not_after))
        if not result or result[0].not_after is not None:
            raise KeyStoreError(f"{self.key_dir}: no current token key (run 'keys rotate')")
        return result

    def private_keys(self, now: float | None = None) -> dict[str, X25519PrivateKey]:
        """``{key id: private key}`` for the verifier."""
        return {key.key_id: key.private_key for key in self.keys(now)}

    def rotate(self, now: float | None = None) -> str:
        """Make a new current key, retire the previous one, delete expired ones; new id."""
        now = int(time.time() if now is None else now)
        entries = self._read_index()
        for entry in entries:
            if entry["retired_at"] is None:
                entry["retired_at"] = now
        private_key = X25519PrivateKey.generate()
        key_id = token_key_id(private_key)
        write_private_file(self.key_dir / f"token-{key_id}.key", private_key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
            serialization.NoEncryption()))
        kept, expired = [], []
        for entry in entries:
            (expired if self._not_after(entry) < now else kept).append(entry)
        self._write_index([{"id": key_id, "created_at": now, "retired_at": None}, *kept])
        for entry in expired:
            (self.key_dir / f"token-{entry['id']}.key").unlink(missing_ok=True)
        return key_id

    def ensure_current(self) -> str | None:
        """Create the first key if there is none; its id, or None if one existed."""
        entries = self._read_index()
        if entries and entries[0]["retired_at"] is None:
            return None
        return self.rotate()


class AttestationCA:
    """The TTP's attestation CA (EC P-256): issues AK certificates to enrolled hosts."""

    def __init__(self, cert_file: str | os.PathLike, key_file: str | os.PathLike) -> None:
        self.cert_file = pathlib.Path(cert_file)
        self.key_file = pathlib.Path(key_file)
        self._certificate: tuple[tuple, x509.Certificate] | None = None  # (file identity, cert)

    def exists(self) -> bool:
        """Whether both CA files are present."""
        return self.cert_file.exists() and self.key_file.exists()

    def init(self, common_name: str = "trusted-launch attestation CA", days: int = 3650) -> bool:
        """Create a self-signed CA if missing; True if created."""
        if self.exists():
            return False
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=days))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(
                    digital_signature=False, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                               critical=False)
                .sign(key, hashes.SHA256()))
        write_private_file(self.key_file, key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
        self.cert_file.parent.mkdir(parents=True, exist_ok=True)
        self.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return True

    def certificate(self) -> x509.Certificate:
        """The CA certificate (parsed again only when the file was replaced or changed)."""
        try:
            stat = self.cert_file.stat()
            identity = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
            if self._certificate is None or self._certificate[0] != identity:
                self._certificate = (identity, x509.load_pem_x509_certificate(
                    self.cert_file.read_bytes()))
            return self._certificate[1]
        except (OSError, ValueError) as exc:
            raise KeyStoreError(f"{self.cert_file}: cannot load attestation CA "
                                f"certificate ({type(exc).__name__})") from exc

    def _private_key(self) -> ec.EllipticCurvePrivateKey:
        try:
            key = serialization.load_pem_private_key(self.key_file.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            raise KeyStoreError(f"{self.key_file}: cannot load attestation CA key "
                                f"({type(exc).__name__})") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise KeyStoreError(f"{self.key_file}: attestation CA key is not an EC key")
        return key

    def issue_ak_certificate(self, host: str, ak_public_key, days: int) -> x509.Certificate:
        """An X.509 certificate binding ``host`` (subject CN) to its AK public key."""
        ca_cert = self.certificate()
        now = datetime.datetime.now(datetime.UTC)
        return (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
                .issuer_name(ca_cert.subject).public_key(ak_public_key)
                .serial_number(int.from_bytes(secrets.token_bytes(16), "big") >> 1)
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=days))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=False,
                    crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                    ca_cert.public_key()), critical=False)
                .sign(self._private_key(), hashes.SHA256()))
