"""A real HTTPS server (stdlib http.server + TLS from a test CA) serving /v1/keys."""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import json
import ssl
import threading
from dataclasses import dataclass

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.x509.oid import NameOID

from trusted_launch.crypto._encoding import b64url_encode
from trusted_launch.crypto.token import HPKE_ALGORITHM, key_id_for


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(common_name))
            .issuer_name(_name(common_name)).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                         False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def make_server_cert(ca_key, ca_cert) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    san = x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                       x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    cert = (x509.CertificateBuilder().subject_name(_name("localhost"))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(san, critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return key, cert


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class FakeTTP:
    """The HTTPS server's state: what /v1/keys answers, and the matching private key."""

    url: str
    ca_file: str
    private_key: X25519PrivateKey
    document: object
    status: int = 200

    @property
    def key_id(self) -> str:
        return key_id_for(self.private_key.public_key())


def keys_document(private_key: X25519PrivateKey, **overrides) -> dict:
    public = private_key.public_key().public_bytes(serialization.Encoding.Raw,
                                                   serialization.PublicFormat.Raw)
    entry = {"id": key_id_for(private_key.public_key()), "algorithm": HPKE_ALGORITHM,
             "public_key": b64url_encode(public), "not_after": None}
    entry.update(overrides)
    return {"keys": [entry]}


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory):
    ca_key, ca_cert = make_ca("trusted-launch test CA")
    directory = tmp_path_factory.mktemp("pki")
    (directory / "ca.pem").write_bytes(_pem(ca_cert))
    _, other_ca = make_ca("some other CA")
    (directory / "other-ca.pem").write_bytes(_pem(other_ca))
    server_key, server_cert = make_server_cert(ca_key, ca_cert)
    (directory / "server.pem").write_bytes(_pem(server_cert))
    (directory / "server.key").write_bytes(server_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return directory


@pytest.fixture
def fake_ttp(test_ca):
    """An HTTPS server on 127.0.0.1 answering GET /v1/keys from ``FakeTTP.document``."""
    private_key = X25519PrivateKey.generate()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(test_ca / "server.pem", test_ca / "server.key")
    state = FakeTTP("", str(test_ca / "ca.pem"), private_key, keys_document(private_key))

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps(state.document).encode() if not isinstance(
                state.document, bytes) else state.document
            self.send_response(state.status if self.path == "/v1/keys" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.url = f"https://127.0.0.1:{server.server_address[1]}"
    yield state
    server.shutdown()
    server.server_close()
    thread.join()
