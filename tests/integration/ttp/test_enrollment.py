"""Host enrollment against the real TTP with real swtpm TPMs (EK certs from a local CA).

Every host is registered by the operator (admin API) before it enrolls, as
the TTP requires; the tests of consent itself register as each case needs.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import secrets

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from tests.fixtures.ttp import CertificateAuthority, TTPServer
from trusted_launch.tpm.device import TPMDevice
from trusted_launch.tpm.errors import TPMError

pytestmark = pytest.mark.swtpm


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _host_name() -> str:
    return f"compute-{secrets.token_hex(4)}"


class Host:
    """A simulated compute host: one swtpm behind the project's TPM layer."""

    def __init__(self, tcti: str) -> None:
        self.device = TPMDevice(tcti)
        self.ak = self.device.ensure_attestation_key()
        self.ek_certificate = self.device.ek_certificate()
        self.ek_public = self.device.ek_public()

    def enrollment(self, name: str, **overrides: bytes) -> dict:
        fields = {"ek_certificate": self.ek_certificate, "ek_public": self.ek_public,
                  "ak_public": self.ak.public, **overrides}
        return {"host": name, **{key: _b64(value) for key, value in fields.items()}}

    def answer(self, challenge: dict) -> dict:
        secret = self.device.activate_credential(
            base64.b64decode(challenge["credential_blob"]),
            base64.b64decode(challenge["encrypted_secret"]))
        return {"secret": _b64(secret)}


@pytest.fixture
def hosts(swtpm_factory):
    made: list[Host] = []

    def make(count: int) -> list[Host]:
        made.extend(Host(tpm.tcti) for tpm in swtpm_factory(count))
        return made[-count:]

    yield make
    for host in made:
        host.device.close()


def _register(ttp: TTPServer, name: str, host: Host | None = None) -> None:
    """The operator registers ``name`` (with ``host``'s EK, else to approve the first EK)."""
    body = {} if host is None else {
        "ek_certificate_sha256": hashlib.sha256(host.ek_certificate).hexdigest()}
    answer = ttp.admin("PUT", f"/v1/hosts/{name}", json=body)
    assert answer.status_code == 201, answer.text


def _state(ttp: TTPServer, name: str) -> dict:
    answer = ttp.admin("GET", f"/v1/hosts/{name}")
    assert answer.status_code == 200, answer.text
    return answer.json()


def _enroll(ttp: TTPServer, host: Host, name: str) -> str:
    """Registration (if new) and full enrollment; the AK certificate PEM."""
    ttp.register_host(name, host.ek_certificate)
    challenge = ttp.request("POST", "/v1/hosts", json=host.enrollment(name))
    assert challenge.status_code == 201, challenge.text
    activated = ttp.request("POST", f"/v1/hosts/{name}/activation",
                            json=host.answer(challenge.json()))
    assert activated.status_code == 200, activated.text
    return activated.json()["ak_certificate"]


def _refusal(response, status: int = 403) -> str:
    assert response.status_code == status, response.text
    return response.json()["error"]["check"]


def test_enrollment_issues_an_ak_certificate(ttp_server: TTPServer, hosts) -> None:
    (host,) = hosts(1)
    name = _host_name()
    assert ttp_server.admin("GET", f"/v1/hosts/{name}").status_code == 404
    pem = _enroll(ttp_server, host, name)
    cert = x509.load_pem_x509_certificate(pem.encode())
    ca = x509.load_pem_x509_certificate(
        (ttp_server.directory / "ca" / "ak-ca.pem").read_bytes())
    cert.verify_directly_issued_by(ca)
    assert cert.subject.rfc4514_string() == f"CN={name}"
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    from trusted_launch.evidence.tpm2 import parse_public
    ak_key = parse_public(host.ak.public, tpm2b=True).public_key()
    assert cert.public_key().public_bytes(serialization.Encoding.DER, spki) == \
        ak_key.public_bytes(serialization.Encoding.DER, spki)
    state = _state(ttp_server, name)
    assert state["state"] == "active" and state["ak_name"] == host.ak.name.hex()
    assert state["enrollment_approved"] is False  # the operator's consent is used up


def test_ek_public_of_another_tpm_is_refused(ttp_server: TTPServer, hosts) -> None:
    first, second = hosts(2)
    body = first.enrollment(_host_name(), ek_public=second.ek_public)
    response = ttp_server.request("POST", "/v1/hosts", json=body)
    assert _refusal(response) == "ek_public_mismatch"


def test_ek_certificate_from_an_unknown_vendor_is_refused(
        ttp_server: TTPServer, hosts, other_test_ca: CertificateAuthority) -> None:
    (host,) = hosts(1)
    genuine = x509.load_der_x509_certificate(host.ek_certificate)
    now = datetime.datetime.now(datetime.UTC)
    forged = (x509.CertificateBuilder().subject_name(genuine.subject)
              .issuer_name(other_test_ca.cert.subject).public_key(genuine.public_key())
              .serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(days=1))
              .not_valid_after(now + datetime.timedelta(days=1))
              .sign(other_test_ca.key, hashes.SHA256()))
    body = host.enrollment(_host_name(),
                           ek_certificate=forged.public_bytes(serialization.Encoding.DER))
    response = ttp_server.request("POST", "/v1/hosts", json=body)
    assert _refusal(response) == "ek_certificate_chain"


def test_ek_as_ak_is_refused_for_its_attributes(ttp_server: TTPServer, hosts) -> None:
    (host,) = hosts(1)
    body = host.enrollment(_host_name(), ak_public=host.ek_public)
    assert _refusal(ttp_server.request("POST", "/v1/hosts", json=body)) == "ak_attributes"


def test_wrong_activation_secret_is_refused_and_changes_nothing(
        ttp_server: TTPServer, hosts) -> None:
    (host,) = hosts(1)
    name = _host_name()
    _register(ttp_server, name, host)
    challenge = ttp_server.request("POST", "/v1/hosts", json=host.enrollment(name))
    assert challenge.status_code == 201
    wrong = ttp_server.request("POST", f"/v1/hosts/{name}/activation",
                               json={"secret": _b64(secrets.token_bytes(32))})
    assert _refusal(wrong) == "activation_failed"
    assert _state(ttp_server, name)["failed_activations"] == 1
    right = ttp_server.request("POST", f"/v1/hosts/{name}/activation",
                               json=host.answer(challenge.json()))
    assert right.status_code == 200, right.text
    assert _state(ttp_server, name)["state"] == "active"


def test_wrong_activation_secrets_are_rate_limited_per_client(ttp_server: TTPServer,
                                                              hosts) -> None:
    (host,) = hosts(1)
    name = _host_name()
    _register(ttp_server, name, host)
    challenge = ttp_server.request("POST", "/v1/hosts", json=host.enrollment(name)).json()
    for _ in range(5):
        wrong = ttp_server.request("POST", f"/v1/hosts/{name}/activation",
                                   json={"secret": _b64(secrets.token_bytes(32))})
        assert _refusal(wrong) == "activation_failed"
    limited = ttp_server.request("POST", f"/v1/hosts/{name}/activation",
                                 json=host.answer(challenge))
    assert _refusal(limited, 429) == "activation_rate_limited"
    assert int(limited.headers["Retry-After"]) > 0
    state = _state(ttp_server, name)
    assert state["failed_activations"] == 5 and state["live_challenges"] == 1


def test_another_tpm_cannot_answer_the_challenge(ttp_server: TTPServer, hosts) -> None:
    first, second = hosts(2)
    name = _host_name()
    _register(ttp_server, name, first)
    challenge = ttp_server.request("POST", "/v1/hosts", json=first.enrollment(name)).json()
    with pytest.raises(TPMError):
        second.answer(challenge)


def test_identity_takeover_is_refused(ttp_server: TTPServer, hosts) -> None:
    owner, intruder = hosts(2)
    name = _host_name()
    _enroll(ttp_server, owner, name)
    response = ttp_server.request("POST", "/v1/hosts", json=intruder.enrollment(name))
    assert _refusal(response) == "host_ek_mismatch"
    assert _state(ttp_server, name)["ak_name"] == owner.ak.name.hex()


def test_unregistered_host_is_refused_and_leaves_no_trace(ttp_server: TTPServer,
                                                          hosts) -> None:
    (host,) = hosts(1)
    name = _host_name()
    response = ttp_server.request("POST", "/v1/hosts", json=host.enrollment(name))
    assert _refusal(response) == "host_not_registered"
    assert ttp_server.admin("GET", f"/v1/hosts/{name}").status_code == 404


def test_first_ek_awaits_the_operators_approval(ttp_server: TTPServer, hosts) -> None:
    host, other = hosts(2)
    name = _host_name()
    _register(ttp_server, name)
    waiting = ttp_server.request("POST", "/v1/hosts", json=host.enrollment(name))
    fingerprint = hashlib.sha256(host.ek_certificate).hexdigest()
    assert _refusal(waiting) == "host_awaiting_approval"
    assert fingerprint in waiting.json()["error"]["reason"]
    state = _state(ttp_server, name)
    assert state["state"] == "awaiting_approval"
    assert state["pending_ek_certificate_sha256"] == fingerprint
    second = ttp_server.request("POST", "/v1/hosts", json=other.enrollment(name))
    assert _refusal(second) == "host_ek_mismatch"  # the first EK seen is the one shown
    approved = ttp_server.admin("POST", f"/v1/hosts/{name}/approval")
    assert approved.status_code == 200, approved.text
    assert approved.json()["ek_certificate_sha256"] == fingerprint
    _enroll(ttp_server, host, name)
    assert _state(ttp_server, name)["state"] == "active"


def test_a_new_ak_needs_the_operators_approval(ttp_server: TTPServer, hosts) -> None:
    host, other = hosts(2)
    name = _host_name()
    _enroll(ttp_server, host, name)
    new_ak = host.enrollment(name, ak_public=other.ak.public)
    assert _refusal(ttp_server.request("POST", "/v1/hosts", json=new_ak)) == \
        "enrollment_not_approved"
    assert ttp_server.admin("POST", f"/v1/hosts/{name}/approval").status_code == 200
    assert ttp_server.request("POST", "/v1/hosts", json=new_ak).status_code == 201
    assert _state(ttp_server, name)["ak_name"] == host.ak.name.hex()  # until activated


def test_replacing_the_tpm_revokes_the_old_ak(ttp_server: TTPServer, hosts) -> None:
    old, new = hosts(2)
    name = _host_name()
    _enroll(ttp_server, old, name)
    fingerprint = hashlib.sha256(new.ek_certificate).hexdigest()
    approved = ttp_server.admin("POST", f"/v1/hosts/{name}/approval",
                                json={"ek_certificate_sha256": fingerprint.upper()})
    assert approved.status_code == 200 and approved.json()["revoked_ak"] is True
    assert _state(ttp_server, name)["state"] == "registered"
    stale = ttp_server.request("POST", "/v1/hosts", json=old.enrollment(name))
    assert _refusal(stale) == "host_ek_mismatch"
    _enroll(ttp_server, new, name)
    assert _state(ttp_server, name)["ak_name"] == new.ak.name.hex()


def test_live_challenges_are_never_replaced_and_are_bounded(ttp_server: TTPServer,
                                                            hosts) -> None:
    (host, *others) = hosts(5)
    name = _host_name()
    _register(ttp_server, name, host)
    challenge = ttp_server.request("POST", "/v1/hosts", json=host.enrollment(name)).json()
    again = ttp_server.request("POST", "/v1/hosts", json=host.enrollment(name))
    assert _refusal(again, 409) == "enrollment_challenge_pending"
    for index, other in enumerate(others):  # the victim's EK with other AKs
        answer = ttp_server.request("POST", "/v1/hosts",
                                    json=host.enrollment(name, ak_public=other.ak.public))
        if index < 3:
            assert answer.status_code == 201, answer.text
        else:
            assert _refusal(answer, 429) == "enrollment_challenges_exhausted"
    activated = ttp_server.request("POST", f"/v1/hosts/{name}/activation",
                                   json=host.answer(challenge))
    assert activated.status_code == 200, activated.text
    assert _state(ttp_server, name)["live_challenges"] == 0


def test_reenrollment_with_the_same_tpm_keeps_the_host_active(ttp_server: TTPServer,
                                                              hosts) -> None:
    (host,) = hosts(1)
    name = _host_name()
    _enroll(ttp_server, host, name)
    again = ttp_server.request("POST", "/v1/hosts", json=host.enrollment(name))
    assert again.status_code == 201  # the same AK: a certificate renewal, no approval needed
    assert _state(ttp_server, name)["state"] == "active"
    activated = ttp_server.request("POST", f"/v1/hosts/{name}/activation",
                                   json=host.answer(again.json()))
    assert x509.load_pem_x509_certificate(activated.json()["ak_certificate"].encode())


@pytest.mark.parametrize(("field", "value"), [
    ("host", "bad name!"), ("ek_certificate", "%%%"), ("ek_certificate", _b64(b"not der")),
    ("ek_public", _b64(b"\x00\x01")), ("ak_public", 42), ("surprise", "x")])
def test_malformed_enrollment_names_the_field(ttp_server: TTPServer, hosts, field: str,
                                              value: object) -> None:
    (host,) = hosts(1)
    body = {**host.enrollment(_host_name()), field: value}
    assert _refusal(ttp_server.request("POST", "/v1/hosts", json=body), 400) == field


def test_host_ek_fingerprint_command_prints_what_the_operator_registers(
        swtpm_factory, capsys) -> None:
    from trusted_launch.cmd import cli
    (tpm,) = swtpm_factory(1)
    assert cli.main(["host", "ek-fingerprint", "--tcti", tpm.tcti]) == 0
    printed = capsys.readouterr().out.strip()
    with TPMDevice(tpm.tcti) as device:
        assert printed == hashlib.sha256(device.ek_certificate()).hexdigest()
