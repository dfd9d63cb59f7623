"""The AK certificate check with its cache: only the CA signature is remembered.

A certificate verified once is still refused for another host, another AK,
outside its validity period, or against another CA certificate.
"""

from __future__ import annotations

import datetime

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from trusted_launch.ttp.errors import Refused
from trusted_launch.ttp.lru import LRUCache
from trusted_launch.ttp.service import check_ak_certificate

NOW = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(common_name: str = "test CA") -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name(common_name))
            .issuer_name(_name(common_name)).public_key(key.public_key())
            .serial_number(1).not_valid_before(NOW - datetime.timedelta(days=1))
            .not_valid_after(NOW + datetime.timedelta(days=10))
            .sign(key, hashes.SHA256()))
    return cert, key


def issue(ca, host: str, ak_key) -> bytes:
    ca_cert, ca_key = ca
    cert = (x509.CertificateBuilder().subject_name(_name(host)).issuer_name(ca_cert.subject)
            .public_key(ak_key).serial_number(2)
            .not_valid_before(NOW - datetime.timedelta(hours=1))
            .not_valid_after(NOW + datetime.timedelta(days=1)).sign(ca_key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture
def ca():
    return make_ca()


@pytest.fixture
def ak():
    return ec.generate_private_key(ec.SECP256R1()).public_key()


def test_a_verified_certificate_is_cached_once(ca, ak):
    cache = LRUCache(8)
    pem = issue(ca, "compute-1", ak)
    for _ in range(3):
        check_ak_certificate(pem, "compute-1", ak, ca[0], NOW, cache=cache)
    assert len(cache) == 1


def test_cached_certificate_for_another_host_is_refused(ca, ak):
    cache = LRUCache(8)
    pem = issue(ca, "compute-1", ak)
    check_ak_certificate(pem, "compute-1", ak, ca[0], NOW, cache=cache)
    with pytest.raises(Refused, match="not to host 'compute-2'"):
        check_ak_certificate(pem, "compute-2", ak, ca[0], NOW, cache=cache)


def test_cached_certificate_over_another_ak_is_refused(ca, ak):
    cache = LRUCache(8)
    pem = issue(ca, "compute-1", ak)
    check_ak_certificate(pem, "compute-1", ak, ca[0], NOW, cache=cache)
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    with pytest.raises(Refused, match="other than the host's enrolled AK"):
        check_ak_certificate(pem, "compute-1", other, ca[0], NOW, cache=cache)


def test_cached_certificate_outside_its_validity_is_refused(ca, ak):
    cache = LRUCache(8)
    pem = issue(ca, "compute-1", ak)
    check_ak_certificate(pem, "compute-1", ak, ca[0], NOW, cache=cache)
    with pytest.raises(Refused, match="validity period"):
        check_ak_certificate(pem, "compute-1", ak, ca[0], NOW + datetime.timedelta(days=2),
                             cache=cache)


def test_cached_certificate_is_checked_again_against_another_ca(ca, ak):
    cache = LRUCache(8)
    pem = issue(ca, "compute-1", ak)
    check_ak_certificate(pem, "compute-1", ak, ca[0], NOW, cache=cache)
    other_ca, _ = make_ca("another CA")
    with pytest.raises(Refused, match="not issued by this TTP's attestation CA"):
        check_ak_certificate(pem, "compute-1", ak, other_ca, NOW, cache=cache)


def test_a_refused_certificate_is_not_cached(ca, ak):
    cache = LRUCache(8)
    forged = issue(make_ca("test CA"), "compute-1", ak)  # same CA name, another CA key
    for _ in range(2):
        with pytest.raises(Refused, match="not issued by this TTP's attestation CA"):
            check_ak_certificate(forged, "compute-1", ak, ca[0], NOW, cache=cache)
    assert len(cache) == 0


def test_the_cache_is_bounded(ca, ak):
    cache = LRUCache(size=2)
    for index in range(4):
        pem = issue(ca, f"compute-{index}", ak)
        check_ak_certificate(pem, f"compute-{index}", ak, ca[0], NOW, cache=cache)
    assert len(cache) == 2
