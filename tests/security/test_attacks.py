"""Attacks on the protocol, each against real swtpm hosts and the real TTP over HTTPS.

Every attack must fail closed and say why: the TTP refuses with a stable
check name (see the API contract), or the host refuses before booting. The
honest path works on the same fixtures (see test_protocol.py and the
control tests here), so each refusal is caused by the attack alone.
"""

from __future__ import annotations

import base64
import os
import secrets
import socket
import ssl
import threading
import time
import types
import uuid
from collections.abc import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from tpm2_pytss.types import TPM2B_PUBLIC, TPM2B_SENSITIVE_CREATE

from tests.security.conftest import TRUSTED_LOG, Host, start_host
from trusted_launch.client.errors import TTPKeyError
from trusted_launch.client.ttp_keys import fetch_ttp_key
from trusted_launch.compute.errors import (
    AttestationRefused,
    ImageDigestMismatch,
    TTPNotAllowed,
    TTPUnreachable,
)
from trusted_launch.compute.image_digest import BaseImageDigests
from trusted_launch.compute.launch import HostIdentity, TrustedLaunchHost, check_image_digest
from trusted_launch.compute.ttp_client import TTPClient
from trusted_launch.crypto.binding import certify_qualifying_data
from trusted_launch.crypto.digest import digest_file
from trusted_launch.crypto.token import LaunchToken, seal_token
from trusted_launch.evidence.eventlog import parse_event_log
from trusted_launch.evidence.tpm2 import parse_public
from trusted_launch.sandbox.hosts import BIND_KEY_PCRS, ttp_client
from trusted_launch.sandbox.pki import CertificateAuthority
from trusted_launch.tpm import BindKey, bindkeys
from trusted_launch.tpm.templates import as_selection, policy_pcr_digest

pytestmark = pytest.mark.swtpm

TRUSTED_ATTRIBUTES = "decrypt|fixedtpm|fixedparent|sensitivedataorigin"


def _launch() -> str:
    return str(uuid.uuid4())


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _refusal(call) -> AttestationRefused:
    """The AttestationRefused that ``call()`` raises (anything else fails the test)."""
    with pytest.raises(AttestationRefused) as refused:
        call()
    return refused.value


def _attest(ttp, body: dict) -> AttestationRefused:
    return _refusal(lambda: ttp_client(ttp).attest(body))


def _body(host: Host, key: BindKey, token: str, launch_id: str,
          event_log: bytes | None = None, pcrs: str = BIND_KEY_PCRS) -> dict:
    """An attestation request for ``key``, certified by the host's real AK."""
    attest, signature = bindkeys.certify(
        host.device, key, certify_qualifying_data(token, key.name, launch_id))
    return {"host": host.name, "launch_id": launch_id, "token": token,
            "ak_certificate": host.runner._identity.ak_certificate_pem,
            "bind_key_public": _b64(key.public), "certify_info": _b64(attest),
            "certify_signature": _b64(signature),
            "event_log": _b64(host.event_log.read_bytes() if event_log is None else event_log),
            "bind_key_pcrs": pcrs}


def _rogue_key(host: Host, *, attributes: str = TRUSTED_ATTRIBUTES,
               params: str = "ecc256:ecdh-sha256:null", policy: bytes | None = None,
               pcrs: str = BIND_KEY_PCRS) -> BindKey:
    """A key made directly on the host's TPM from an arbitrary template."""
    if policy is None:
        policy = bindkeys.trial_policy_digest(host.device, pcrs)
    template = TPM2B_PUBLIC.parse(params, objectAttributes=attributes, nameAlg="sha256",
                                  authPolicy=policy)
    with host.device.esapi("create rogue key") as ectx:
        private, public, *_ = ectx.create(host.device.srk(ectx), TPM2B_SENSITIVE_CREATE(),
                                          template)
    return BindKey(algorithm="ecc", public=public.marshal(), private=private.marshal(),
                   name=bytes(public.get_name()), pcr_selection=pcrs, auth_policy=policy,
                   created_at=time.time())


# -- the honest path on these fixtures (so the refusals below are the attacks' doing) --

def test_control_trusted_host_gets_n_with_a_hand_built_request(hosts, ttp, tenant):
    token, nonce = tenant("high")
    host = hosts["trusted"]
    answer = ttp_client(ttp).attest(_body(host, _rogue_key(host), token, _launch()))
    assert answer["verdict"] == "trusted"
    assert answer["satisfied_profile"] == "high"
    assert nonce.hex() not in str(answer)


# -- the token ------------------------------------------------------------------------

def test_token_replayed_to_a_second_launch(hosts, ttp, tenant):
    token, nonce = tenant("high")
    runner = hosts["trusted"].runner
    assert runner.release(ttp_client(ttp), token=token, launch_id=_launch()).nonce == nonce
    assert _refusal(lambda: runner.release(ttp_client(ttp), token=token,
                                           launch_id=_launch())).check == "token_replayed"


def test_token_replayed_by_another_host(hosts, ttp, tenant):
    token, _ = tenant("low")
    hosts["trusted"].runner.release(ttp_client(ttp), token=token, launch_id=_launch())
    refused = _refusal(lambda: hosts["untrusted"].runner.release(
        ttp_client(ttp), token=token, launch_id=_launch()))
    assert refused.check == "token_replayed"


def test_whole_request_replayed_by_a_network_attacker(hosts, ttp, tenant):
    token, _ = tenant("high")
    _, body = hosts["trusted"].runner.evidence(token=token, launch_id=_launch())
    assert ttp_client(ttp).attest(body)["verdict"] == "trusted"
    assert _attest(ttp, body).check == "token_replayed"


def _current_ttp_key(ttp) -> tuple[str, object]:
    return fetch_ttp_key(ttp.url, ca_file=str(ttp.ca_file))


def test_token_after_expiry(hosts, ttp, image):
    key_id, public_key = _current_ttp_key(ttp)
    token = seal_token(LaunchToken(nonce=secrets.token_bytes(32), profile="high",
                                   image_digest=digest_file(image, "sha512"),
                                   expires_at=int(time.time()) - 60), public_key, key_id)
    refused = _refusal(lambda: hosts["trusted"].runner.release(
        ttp_client(ttp), token=token, launch_id=_launch()))
    assert refused.check == "token_expired"


def test_token_for_a_stronger_profile_than_the_host_meets(hosts, ttp, tenant):
    token, _ = tenant("high")
    refused = _refusal(lambda: hosts["untrusted"].runner.release(
        ttp_client(ttp), token=token, launch_id=_launch()))
    assert refused.check == "profile_policy"
    assert "high" in refused.reason


def test_token_for_a_profile_the_ttp_does_not_define(hosts, ttp, image):
    """The client library refuses the name; a tenant who seals the token by hand
    (to the TTP's real key) is refused by the TTP itself."""
    key_id, public_key = fetch_ttp_key(ttp.url, ca_file=str(ttp.ca_file))
    token = seal_token(LaunchToken(nonce=secrets.token_bytes(32), profile="platinum",
                                   image_digest=digest_file(image, "sha512"),
                                   expires_at=int(time.time()) + 600),
                       public_key, key_id)
    refused = _refusal(lambda: hosts["trusted"].runner.release(
        ttp_client(ttp), token=token, launch_id=_launch()))
    assert refused.check == "profile_unknown"


def test_token_for_another_ttp_key(hosts, ttp, image):
    stranger = X25519PrivateKey.generate().public_key()
    token = seal_token(LaunchToken(nonce=secrets.token_bytes(32), profile="high",
                                   image_digest=digest_file(image, "sha512"),
                                   expires_at=int(time.time()) + 600),
                       stranger, "0123456789abcdef")
    refused = _refusal(lambda: hosts["trusted"].runner.release(
        ttp_client(ttp), token=token, launch_id=_launch()))
    assert refused.check == "token_key_unknown"


def test_token_relabelled_with_the_ttp_key_id(hosts, ttp, image):
    """Sealed to a stranger's key but labelled with the TTP's key id: HPKE open fails."""
    key_id, _ = _current_ttp_key(ttp)
    token = seal_token(LaunchToken(nonce=secrets.token_bytes(32), profile="high",
                                   image_digest=digest_file(image, "sha512"),
                                   expires_at=int(time.time()) + 600),
                       X25519PrivateKey.generate().public_key(), key_id)
    refused = _refusal(lambda: hosts["trusted"].runner.release(
        ttp_client(ttp), token=token, launch_id=_launch()))
    assert refused.check == "token_malformed"
    assert "decrypt" in refused.reason


def test_token_altered_in_transit(hosts, ttp, tenant):
    token, _ = tenant("high")
    position = len(token) // 2
    altered = token[:position] + ("A" if token[position] != "A" else "B") + token[position + 1:]
    refused = _refusal(lambda: hosts["trusted"].runner.release(
        ttp_client(ttp), token=altered, launch_id=_launch()))
    assert refused.check == "token_malformed"


def test_token_for_another_image_is_refused_by_the_host(hosts, ttp, tenant, image, tmp_path):
    """The tenant sealed H of image A; the provider boots image B: the host refuses."""
    other = tmp_path / "other.raw"
    other.write_bytes(secrets.token_bytes(4096))
    token, _ = tenant("high")
    released = hosts["trusted"].runner.release(ttp_client(ttp), token=token,
                                               launch_id=_launch())
    with pytest.raises(ImageDigestMismatch):
        check_image_digest(released.image_digest, digest_file(other, "sha512").value)
    check_image_digest(released.image_digest, digest_file(image, "sha512").value)


def test_tampered_glance_image_is_refused_even_with_its_mtime_restored(hosts, ttp, tenant,
                                                                      image, tmp_path):
    """The cached base image is altered after its digest was remembered (sidecar too)."""
    base = tmp_path / "_base" / "image"
    base.parent.mkdir()
    base.write_bytes(image.read_bytes())
    digests = BaseImageDigests()
    token, _ = tenant("high")
    released = hosts["trusted"].runner.release(ttp_client(ttp), token=token,
                                               launch_id=_launch())
    check_image_digest(released.image_digest, digests.digest(base, "sha512").value)
    before = base.stat()
    with open(base, "r+b") as handle:
        handle.seek(4096)
        byte = handle.read(1)
        handle.seek(4096)
        handle.write(bytes([byte[0] ^ 0x01]))
    os.utime(base, ns=(before.st_atime_ns, before.st_mtime_ns))
    for cache in (digests, BaseImageDigests()):  # in-process and sidecar caches
        with pytest.raises(ImageDigestMismatch):
            check_image_digest(released.image_digest, cache.digest(base, "sha512").value)


# -- the certify evidence -------------------------------------------------------------

def test_certify_evidence_replayed_into_another_launch(hosts, ttp, tenant):
    token, _ = tenant("high")
    _, body = hosts["trusted"].runner.evidence(token=token, launch_id=_launch())
    assert _attest(ttp, dict(body, launch_id=_launch())).check == "certify_binding"


def test_certify_evidence_replayed_with_another_token(hosts, ttp, tenant):
    old_token, _ = tenant("high")
    new_token, _ = tenant("high")
    _, body = hosts["trusted"].runner.evidence(token=old_token, launch_id=_launch())
    assert _attest(ttp, dict(body, token=new_token)).check == "certify_binding"


def test_bind_key_swapped_after_certify(hosts, ttp, tenant):
    token, _ = tenant("high")
    host = hosts["trusted"]
    _, body = host.runner.evidence(token=token, launch_id=_launch())
    other = _rogue_key(host)
    refused = _attest(ttp, dict(body, bind_key_public=_b64(other.public)))
    assert refused.check == "certify_binding"


def test_certify_signature_forged(hosts, ttp, tenant):
    token, _ = tenant("high")
    _, body = hosts["trusted"].runner.evidence(token=token, launch_id=_launch())
    signature = bytearray(base64.b64decode(body["certify_signature"]))
    signature[-1] ^= 0x01
    refused = _attest(ttp, dict(body, certify_signature=_b64(bytes(signature))))
    assert refused.check == "certify_signature"


# -- bind keys that are not what the protocol needs -----------------------------------

@pytest.mark.parametrize(("label", "attributes", "params", "missing"), [
    ("migratable", "decrypt|sensitivedataorigin", "ecc256:ecdh-sha256:null",
     "FIXED_TPM"),
    ("usable by password", TRUSTED_ATTRIBUTES + "|userwithauth", "ecc256:ecdh-sha256:null",
     "USER_WITH_AUTH"),
    ("a storage parent", "restricted|decrypt|fixedtpm|fixedparent|sensitivedataorigin",
     "ecc256:aes128cfb", "RESTRICTED"),
    ("a signing key too", TRUSTED_ATTRIBUTES + "|sign", "ecc256:null:null", "SIGN_ENCRYPT"),
])
def test_bind_key_with_wrong_attributes(hosts, ttp, tenant, label, attributes, params,
                                        missing):
    token, _ = tenant("high")
    host = hosts["trusted"]
    key = _rogue_key(host, attributes=attributes, params=params)
    refused = _attest(ttp, _body(host, key, token, _launch()))
    assert refused.check == "bind_key_attributes", label
    assert missing in refused.reason


def test_bind_key_with_a_policy_over_other_pcr_values(hosts, ttp, tenant):
    token, _ = tenant("high")
    host = hosts["trusted"]
    selection = as_selection(BIND_KEY_PCRS)
    zeros = {bank: {pcr: bytes(32) for pcr in pcrs} for bank, pcrs in selection.items()}
    key = _rogue_key(host, policy=policy_pcr_digest(selection, zeros))
    assert _attest(ttp, _body(host, key, token, _launch())).check == "bind_key_policy"


def test_bind_key_with_an_empty_policy(hosts, ttp, tenant):
    token, _ = tenant("high")
    host = hosts["trusted"]
    key = _rogue_key(host, policy=b"")
    assert _attest(ttp, _body(host, key, token, _launch())).check == "bind_key_policy"


def test_bind_key_locked_to_fewer_pcrs_than_required(hosts, ttp, tenant):
    """PCR 4-7 (boot loader, Secure Boot state) left out of the lock."""
    token, _ = tenant("high")
    host = hosts["trusted"]
    key = _rogue_key(host, pcrs="sha256:0,1,2,3")
    refused = _attest(ttp, _body(host, key, token, _launch(), pcrs="sha256:0,1,2,3"))
    assert refused.check == "bind_key_policy"
    assert "4,5,6,7" in refused.reason


# -- the event log --------------------------------------------------------------------

def test_forged_event_log_of_a_trusted_boot(hosts, ttp, tenant):
    """The untrusted host shows the trusted host's log; its key is locked to its own PCRs."""
    token, _ = tenant("low")
    host = hosts["untrusted"]
    body = _body(host, host.pool.acquire(), token, _launch(),
                 event_log=TRUSTED_LOG.read_bytes())
    assert _attest(ttp, body).check == "bind_key_policy"


def test_event_log_truncated_mid_record(hosts, ttp, tenant):
    token, _ = tenant("high")
    host = hosts["trusted"]
    data = host.event_log.read_bytes()
    body = _body(host, host.pool.acquire(), token, _launch(), event_log=data[:-7])
    refused = _attest(ttp, body)
    assert refused.check == "event_log_malformed"
    assert "offset" in refused.reason


def test_event_log_with_its_last_events_cut(hosts, ttp, tenant):
    token, _ = tenant("high")
    host = hosts["trusted"]
    data = host.event_log.read_bytes()
    last = parse_event_log(data).events[-1].offset
    body = _body(host, host.pool.acquire(), token, _launch(), event_log=data[:last])
    assert _attest(ttp, body).check == "bind_key_policy"


# -- host identity --------------------------------------------------------------------

def _forged_ak_certificate(host: Host, name: str, ca: CertificateAuthority) -> str:
    ak_key = parse_public(host.device.ensure_attestation_key().public, tpm2b=True).public_key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = ca._builder(subject, ca.cert.subject, ak_key, ca=False).sign(ca.key, hashes.SHA256())
    return cert.public_bytes(Encoding.PEM).decode()


@pytest.fixture(scope="module")
def rogue(swtpm_state_cache) -> Iterator[Host]:
    """A genuine TPM booted into the trusted state but never enrolled at the TTP."""
    host = start_host(f"rogue-{secrets.token_hex(3)}", swtpm_state_cache.state(2),
                      swtpm_state_cache.ca, TRUSTED_LOG, None)
    yield host
    host.close()


def _as(host: Host, name: str, certificate: str) -> TrustedLaunchHost:
    return TrustedLaunchHost(device=host.device, pool=host.pool,
                             identity=HostIdentity(name, certificate),
                             read_event_log=host.event_log.read_bytes,
                             bind_key_pcrs=BIND_KEY_PCRS)


def test_ak_not_enrolled(rogue, ttp, tenant, tmp_path):
    ca = CertificateAuthority(tmp_path / "rogue-ca", name="rogue CA")
    token, _ = tenant("high")
    runner = _as(rogue, rogue.name, _forged_ak_certificate(rogue, rogue.name, ca))
    refused = _refusal(lambda: runner.release(ttp_client(ttp), token=token,
                                              launch_id=_launch()))
    assert refused.check == "host_unknown"


def test_ak_certificate_forged_for_an_enrolled_host(rogue, hosts, ttp, tenant, tmp_path):
    ca = CertificateAuthority(tmp_path / "rogue-ca", name="rogue CA")
    name = hosts["trusted"].name
    token, _ = tenant("high")
    runner = _as(rogue, name, _forged_ak_certificate(rogue, name, ca))
    refused = _refusal(lambda: runner.release(ttp_client(ttp), token=token,
                                              launch_id=_launch()))
    assert refused.check == "ak_certificate"


def test_ak_certificate_of_host_a_presented_by_host_b(hosts, ttp, tenant):
    token, _ = tenant("low")
    a, b = hosts["trusted"], hosts["untrusted"]
    runner = _as(b, b.name, a.runner._identity.ak_certificate_pem)
    refused = _refusal(lambda: runner.release(ttp_client(ttp), token=token,
                                              launch_id=_launch()))
    assert refused.check == "ak_certificate"


def test_identity_takeover_by_re_enrolling_a_host_name(rogue, hosts, ttp, tenant):
    from trusted_launch.compute.enrollment import enroll_host

    victim = hosts["trusted"]
    refused = _refusal(lambda: enroll_host(rogue.device, ttp_client(ttp), victim.name))
    assert refused.check == "host_ek_mismatch"
    token, nonce = tenant("high")  # the victim is untouched
    assert victim.runner.release(ttp_client(ttp), token=token,
                                 launch_id=_launch()).nonce == nonce


def test_identity_takeover_of_an_unregistered_host_name(rogue, ttp):
    """A genuine TPM (EK from an accepted vendor CA) cannot claim a name nobody registered."""
    from trusted_launch.compute.enrollment import enroll_host

    name = f"compute-new-{secrets.token_hex(3)}"
    refused = _refusal(lambda: enroll_host(rogue.device, ttp_client(ttp), name))
    assert refused.check == "host_not_registered"
    assert ttp.admin("GET", f"/v1/hosts/{name}").status_code == 404  # nothing stored


def _registered(ttp, host: Host) -> str:
    """A fresh host name the operator registered with ``host``'s EK."""
    name = f"joining-{secrets.token_hex(3)}"
    ttp.register_host(name, host.device.ek_certificate())
    return name


def _enrollment_body(host: Host, name: str, ak_public: bytes | None = None) -> dict:
    device = host.device
    return {"host": name, "ek_certificate": _b64(device.ek_certificate()),
            "ek_public": _b64(device.ek_public()),
            "ak_public": _b64(ak_public or device.ensure_attestation_key().public)}


def _activate(ttp, host: Host, name: str, challenge: dict) -> dict:
    secret = host.device.activate_credential(base64.b64decode(challenge["credential_blob"]),
                                             base64.b64decode(challenge["encrypted_secret"]))
    return ttp_client(ttp).activate(name, {"secret": _b64(secret)})


def test_wrong_activation_secret_does_not_disrupt_an_enrollment(rogue, ttp):
    joining = rogue  # a genuine host, registered, between challenge and answer
    name = _registered(ttp, joining)
    challenge = ttp_client(ttp).enroll(_enrollment_body(joining, name))
    for _ in range(3):  # an outsider answers with guesses
        refused = _refusal(lambda: ttp_client(ttp).activate(
            name, {"secret": _b64(secrets.token_bytes(32))}))
        assert refused.check == "activation_failed"
    assert "BEGIN CERTIFICATE" in _activate(ttp, joining, name, challenge)["ak_certificate"]
    state = ttp.admin("GET", f"/v1/hosts/{name}").json()
    assert (state["state"], state["failed_activations"]) == ("active", 3)


def test_pending_challenge_is_not_replaced_with_another_ak(rogue, hosts, ttp):
    """The host's public EK certificate and EK public, reused with the attacker's AK."""
    joining, attacker = rogue, hosts["untrusted"]
    name = _registered(ttp, joining)
    challenge = ttp_client(ttp).enroll(_enrollment_body(joining, name))
    foreign_ak = attacker.device.ensure_attestation_key().public
    ttp_client(ttp).enroll(_enrollment_body(joining, name, ak_public=foreign_ak))  # its own
    replay = _refusal(lambda: ttp_client(ttp).enroll(_enrollment_body(joining, name)))
    assert replay.check == "enrollment_challenge_pending"
    _activate(ttp, joining, name, challenge)
    enrolled = ttp.admin("GET", f"/v1/hosts/{name}").json()
    assert enrolled["ak_name"] == joining.device.ensure_attestation_key().name.hex()


@pytest.mark.parametrize("path", ["/v1/hosts/{trusted}", "/v1/hosts", "/v1/hosts?status=1",
                                  "/v1/attestations/{attestation}", "/v1/profiles/high"])
def test_anonymous_reads_of_hosts_fleet_status_and_audit_records(hosts, ttp, tenant, path):
    attestation = ""
    if "{attestation}" in path:
        token, _ = tenant("low")
        runner = hosts["trusted"].runner
        pending = runner.attest(ttp_client(ttp), token=token, launch_id=_launch())
        runner.open(pending)
        attestation = pending.attestation_id
    url = path.format(trusted=hosts["trusted"].name, attestation=attestation)
    anonymous = ttp.request("GET", url)
    assert anonymous.status_code == 401
    assert anonymous.json()["error"]["check"] == "authentication_required"
    assert hosts["trusted"].name not in anonymous.text
    forged = ttp.request("GET", url, headers={"X-Auth-Token": secrets.token_urlsafe(32)})
    assert (forged.status_code, forged.json()["error"]["check"]) == (401, "invalid_token")
    reader = ttp.request("GET", url, headers={"X-Auth-Token": ttp.create_token("reader")})
    assert reader.status_code == 200, reader.text


def test_a_host_cannot_read_or_attest_for_another_host(hosts, ttp, tenant):
    trusted, untrusted = hosts["trusted"], hosts["untrusted"]
    as_untrusted = {"X-Auth-Token": ttp.create_token("host", untrusted.name)}
    for method, path in (("GET", f"/v1/hosts/{trusted.name}"),
                         ("POST", f"/v1/hosts/{trusted.name}/challenges"),
                         ("POST", f"/v1/hosts/{trusted.name}/attestations")):
        answer = ttp.request(method, path, headers=as_untrusted, json={})
        assert (answer.status_code, answer.json()["error"]["check"]) == (403, "not_authorized")
    assert ttp.request("GET", f"/v1/hosts/{untrusted.name}", headers=as_untrusted
                       ).status_code == 200
    token, _ = tenant("low")  # trusted's own evidence, sent with untrusted's credentials
    client = ttp_client(ttp, auth_token=as_untrusted["X-Auth-Token"])
    refused = _refusal(lambda: trusted.runner.release(client, token=token,
                                                      launch_id=_launch()))
    assert refused.check == "host_mismatch"


# -- the scheduler --------------------------------------------------------------------

def test_host_in_a_high_aggregate_measuring_low_gets_no_n(hosts, ttp, tenant):
    """The scheduler is told the untrusted host is 'high'; the TTP still refuses."""
    import nova.conf
    from nova import objects

    from trusted_launch.scheduler.security_profile_filter import SecurityProfileFilter

    objects.register_all()
    conf = nova.conf.CONF
    conf.set_override("profile_from_server_metadata", False, group="trusted_launch")
    try:
        flavor = objects.Flavor(name="m1", memory_mb=512, vcpus=1, root_gb=1, ephemeral_gb=0,
                                swap=0, extra_specs={})
        spec = objects.RequestSpec(flavor=flavor, image=objects.ImageMeta.from_dict({}),
                                   num_instances=1, instance_uuid=_launch())
        spec.scheduler_hints = {"trusted_sp": ["high"]}
        aggregate = objects.Aggregate(id=1, name="high", hosts=[hosts["untrusted"].name],
                                      metadata={"trusted_sp": "high"})
        placed = types.SimpleNamespace(host=hosts["untrusted"].name, aggregates=[aggregate])
        assert SecurityProfileFilter().filter_all([placed], spec) == [placed]
    finally:
        conf.clear_override("profile_from_server_metadata", group="trusted_launch")
    token, _ = tenant("high")
    refused = _refusal(lambda: hosts["untrusted"].runner.release(
        ttp_client(ttp), token=token, launch_id=spec.instance_uuid))
    assert refused.check == "profile_policy"


# -- the TTP's address and identity ---------------------------------------------------

@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A listening TCP socket on 127.0.0.1 that records nothing unless connected to."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        sock.settimeout(0)
        yield sock


def _connections(sock: socket.socket) -> int:
    count = 0
    while True:
        try:
            connection, _ = sock.accept()
        except (BlockingIOError, TimeoutError):
            return count
        connection.close()
        count += 1


def _driver_release(hosts, url: str, allowed: list[str], token: str) -> object:
    """The compute driver's own attestation path, steps 5-11 (allow-list, client, protocol)."""
    import nova.conf

    from trusted_launch.compute.driver import TrustedLaunchRequest, TrustedLibvirtDriver
    from trusted_launch.compute.launch import StepTimer

    conf = nova.conf.CONF
    conf.set_override("allowed_ttp_urls", allowed, group="trusted_launch")
    driver = types.SimpleNamespace(
        trusted_host=hosts["trusted"].runner, _refill_pool=lambda: None,
        _ttp_client=lambda base: TTPClient(base, timeout=2, connect_retries=0))
    try:
        return TrustedLibvirtDriver._attest(
            driver, types.SimpleNamespace(uuid=_launch()),
            TrustedLaunchRequest(token=token, ttp_url=url, profile="high"), StepTimer())
    finally:
        conf.clear_override("allowed_ttp_urls", group="trusted_launch")


@pytest.mark.parametrize("spelling", [
    "https://127.0.0.1:{port}", "https://127.0.0.1:{port}/v1/attestations#",
    "https://allowed.example@127.0.0.1:{port}", "http://allowed.example"])
def test_ttp_url_off_the_allow_list_is_never_contacted(hosts, tenant, listener, spelling):
    url = spelling.format(port=listener.getsockname()[1])
    token, _ = tenant("high")
    with pytest.raises(TTPNotAllowed):
        _driver_release(hosts, url, ["https://allowed.example"], token)
    assert _connections(listener) == 0


def test_allowed_ttp_url_is_contacted_control(hosts, tenant, listener):
    """Control for the test above: the same listener does see a connection when allowed."""
    url = f"https://127.0.0.1:{listener.getsockname()[1]}"
    token, _ = tenant("high")
    with pytest.raises(TTPUnreachable):
        _driver_release(hosts, url, [url], token)
    assert _connections(listener) == 1


@pytest.fixture
def impostor(tmp_path) -> Iterator[tuple[str, list[bytes]]]:
    """(URL, received) of a TLS server with a certificate from an unrelated CA."""
    ca = CertificateAuthority(tmp_path / "impostor-ca", name="impostor CA")
    cert, key = ca.issue("impostor")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    received: list[bytes] = []
    sock = socket.create_server(("127.0.0.1", 0))
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = sock.accept()
            except TimeoutError:
                continue
            connection.settimeout(2)
            try:
                with context.wrap_socket(connection, server_side=True) as tls:
                    received.append(tls.recv(65536))
            except (ssl.SSLError, OSError):
                connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{sock.getsockname()[1]}", received
    stop.set()
    thread.join(5)
    sock.close()


def test_man_in_the_middle_with_a_wrong_certificate_gets_nothing(hosts, ttp, tenant,
                                                                 impostor):
    url, received = impostor
    token, _ = tenant("high")
    with pytest.raises(TTPUnreachable, match="TLS"):
        hosts["trusted"].runner.release(ttp_client(ttp, url), token=token,
                                        launch_id=_launch())
    with pytest.raises(TTPKeyError, match="TLS"):
        fetch_ttp_key(url, ca_file=str(ttp.ca_file))
    assert received == []  # neither the evidence nor the key request was ever sent


def test_honest_ttp_with_the_same_ca_file_is_trusted_control(ttp):
    """Control for the test above: the real TTP, same CA file, answers the key request."""
    key_id, _ = fetch_ttp_key(ttp.url, ca_file=str(ttp.ca_file))
    assert len(key_id) == 16

