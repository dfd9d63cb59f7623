"""The TTP's verification core on real certify evidence from a swtpm.

A module-scoped swtpm is "booted" with a real Secure Boot event log (its
PCRs equal the log's replay), holds an ECC P-256 AK and ECC + RSA bind keys
locked to sha256:0-7; every test makes fresh TPM2_Certify evidence and
mutates exactly one input.
"""

from __future__ import annotations

import base64
import dataclasses
import pathlib
import secrets

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from tests.conftest import EVENTLOG_DIR
from tests.fixtures.swtpm import SECUREBOOT_LOG, SwtpmProcess
from trusted_launch.crypto.binding import certify_qualifying_data
from trusted_launch.crypto.sealing import open_from_bind_key, release_aad
from trusted_launch.crypto.token import (
    ImageDigest,
    LaunchToken,
    key_id_for,
    seal_token,
    token_digest,
)
from trusted_launch.evidence.tpm2 import PCRSelection, parse_public
from trusted_launch.policy import ProfileSet, load_profile
from trusted_launch.ttp.verifier import AttestationRequest, LaunchVerifier, RequestInvalid

pytestmark = pytest.mark.swtpm

EXAMPLES = pathlib.Path(__file__).parents[3] / "examples" / "profiles"
NOW = 1_800_000_000.0
IMAGE = ImageDigest("sha512", bytes(range(64)))
REQUIRED = PCRSelection.from_spec("sha256:0,1,2,3,4,5,6,7")


@dataclasses.dataclass
class Host:
    device: object
    ak_public: object
    ak_certificate: str
    ecc_key: object
    rsa_key: object
    event_log: bytes


@pytest.fixture(scope="module")
def host(swtpm_state_cache):
    from trusted_launch.tpm.bindkeys import create_bind_key
    from trusted_launch.tpm.device import TPMDevice

    tpm = SwtpmProcess(swtpm_state_cache.state(0), swtpm_state_cache.ca)
    tpm.start()
    try:
        tpm.boot(SECUREBOOT_LOG)
        device = TPMDevice(tpm.tcti)
        ak = device.ensure_attestation_key()
        yield Host(device=device, ak_public=parse_public(ak.public),
                   ak_certificate="-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
                   ecc_key=create_bind_key(device, "ecc"), rsa_key=create_bind_key(device, "rsa"),
                   event_log=SECUREBOOT_LOG.read_bytes())
        device.close()
    finally:
        tpm.stop()


@pytest.fixture(scope="module")
def ttp_key() -> X25519PrivateKey:
    return X25519PrivateKey.generate()


@pytest.fixture(scope="module")
def profiles() -> ProfileSet:
    return ProfileSet(load_profile((EXAMPLES / f"{name}.yaml").read_text())
                      for name in ("low", "medium", "high"))


def make_verifier(ttp_key, profiles, *, now: float = NOW) -> LaunchVerifier:
    return LaunchVerifier(token_keys={key_id_for(ttp_key.public_key()): ttp_key},
                          profiles=profiles, required_pcrs=REQUIRED, clock=lambda: now)


@pytest.fixture
def verifier(ttp_key, profiles) -> LaunchVerifier:
    return make_verifier(ttp_key, profiles)


def make_token(ttp_key, *, profile: str = "medium", expires_at: int = int(NOW) + 600,
               nonce: bytes | None = None, image_key: bytes | None = None):
    nonce = nonce or secrets.token_bytes(32)
    token = LaunchToken(nonce=nonce, profile=profile, image_digest=IMAGE,
                        expires_at=expires_at, image_key=image_key)
    public = ttp_key.public_key()
    return seal_token(token, public, key_id_for(public)), nonce


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def evidence(host: Host, token: str, *, key=None, certified=None, launch_id: str = "launch-1",
             qualifying: bytes | None = None, **fields) -> dict:
    """A request body with fresh certify evidence; ``fields`` override body fields."""
    from trusted_launch.tpm.bindkeys import certify

    key = key or host.ecc_key
    certified = certified or key
    if qualifying is None:
        qualifying = certify_qualifying_data(token, key.name, launch_id)
    attest, signature = certify(host.device, certified, qualifying)
    body = {
        "host": "compute-1", "launch_id": launch_id, "token": token,
        "ak_certificate": host.ak_certificate, "bind_key_public": b64(key.public),
        "certify_info": b64(attest), "certify_signature": b64(signature),
        "event_log": b64(host.event_log), "bind_key_pcrs": "sha256:0,1,2,3,4,5,6,7",
    }
    body.update(fields)
    return body


def with_flipped_signature_bit(body: dict) -> dict:
    """``body`` with the last bit of its Certify signature flipped."""
    signature = bytearray(base64.b64decode(body["certify_signature"]))
    signature[-1] ^= 1
    return {**body, "certify_signature": b64(bytes(signature))}


def verify(verifier, host, body):
    return verifier.verify(AttestationRequest.from_json(body), host.ak_public)


def refused(decision, check: str) -> str:
    assert not decision.trusted, decision
    assert decision.check == check, decision
    assert decision.released is None and decision.satisfied_profile is None
    return decision.reason


# ---- the accepted path ----------------------------------------------------------------

def test_ecc_launch_is_trusted_and_the_tpm_opens_the_release(verifier, host, ttp_key):
    from trusted_launch.tpm.bindkeys import ecdh_zgen

    token, nonce = make_token(ttp_key, image_key=b"k" * 32)
    decision = verify(verifier, host, evidence(host, token))
    assert decision.trusted and decision.check is None and decision.reason is None
    assert decision.requested_profile == "medium" and decision.satisfied_profile == "high"
    assert decision.token_digest == token_digest(token)
    assert decision.token_expires_at == int(NOW) + 600
    assert decision.evidence_digests["bind_key_name"] == host.ecc_key.name.hex()
    secrets_ = open_from_bind_key(
        decision.released, aad=release_aad("launch-1", host.ecc_key.name),
        ecdh_zgen=lambda x, y: ecdh_zgen(host.device, host.ecc_key, (x, y)))
    assert secrets_.nonce == nonce and secrets_.image_digest == IMAGE
    assert secrets_.image_key == b"k" * 32
    text = repr(decision) + "".join(map(str, decision.evidence_digests.values()))
    assert nonce.hex() not in text and decision.released.hex() not in text
    assert "released" not in repr(decision)


def test_rsa_launch_is_trusted_and_the_tpm_opens_the_release(verifier, host, ttp_key):
    from trusted_launch.tpm.bindkeys import rsa_decrypt

    token, nonce = make_token(ttp_key, profile="high")
    decision = verify(verifier, host, evidence(host, token, key=host.rsa_key))
    assert decision.trusted and decision.satisfied_profile == "high"
    opened = open_from_bind_key(
        decision.released, aad=release_aad("launch-1", host.rsa_key.name),
        rsa_decrypt=lambda ct, label: rsa_decrypt(host.device, host.rsa_key, ct, label))
    assert opened.nonce == nonce


def test_release_is_bound_to_the_launch_id(verifier, host, ttp_key):
    token, _ = make_token(ttp_key)
    decision = verify(verifier, host, evidence(host, token, launch_id="launch-7"))
    assert decision.trusted
    with pytest.raises(ValueError):
        open_from_bind_key(decision.released, aad=release_aad("launch-1", host.ecc_key.name),
                           ecdh_zgen=lambda x, y: b"\0" * 32)


# ---- one refusal per check ------------------------------------------------------------

def test_token_malformed(verifier, host, ttp_key):
    token, _ = make_token(ttp_key)
    tampered = token[:40] + ("A" if token[40] != "A" else "B") + token[41:]
    decision = verify(verifier, host, evidence(host, tampered))
    refused(decision, "token_malformed")
    assert decision.token_digest == token_digest(tampered)
    assert decision.requested_profile is None


def test_token_that_does_not_decode(verifier, host):
    decision = verify(verifier, host, evidence(host, "AAAA", qualifying=b"\0" * 32))
    refused(decision, "token_malformed")
    assert decision.token_digest is None


def test_token_key_unknown(verifier, host):
    token, _ = make_token(X25519PrivateKey.generate())
    assert "does not hold" in refused(verify(verifier, host, evidence(host, token)),
                                      "token_key_unknown")


def test_token_expired(ttp_key, profiles, host):
    token, _ = make_token(ttp_key, expires_at=int(NOW) - 1)
    decision = verify(make_verifier(ttp_key, profiles), host, evidence(host, token))
    refused(decision, "token_expired")
    assert decision.token_digest == token_digest(token)


def test_certify_signature_tampered(verifier, host, ttp_key):
    token, _ = make_token(ttp_key)
    decision = verify(verifier, host, with_flipped_signature_bit(evidence(host, token)))
    refused(decision, "certify_signature")
    assert decision.requested_profile == "medium"
    assert decision.token_digest == token_digest(token)
    assert decision.token_expires_at == int(NOW) + 600


def test_certify_info_tampered(verifier, host, ttp_key):
    token, _ = make_token(ttp_key)
    body = evidence(host, token)
    attest = bytearray(base64.b64decode(body["certify_info"]))
    attest[-1] ^= 1
    decision = verify(verifier, host, {**body, "certify_info": b64(bytes(attest))})
    refused(decision, "certify_signature")


def test_certify_by_another_ak(verifier, host, ttp_key):
    token, _ = make_token(ttp_key)
    other_ak = parse_public(host.rsa_key.public)  # not the host's AK
    decision = verifier.verify(AttestationRequest.from_json(evidence(host, token)), other_ak)
    refused(decision, "certify_signature")


def test_certify_binding_for_another_launch(verifier, host, ttp_key):
    token, _ = make_token(ttp_key)
    stale = certify_qualifying_data(token, host.ecc_key.name, "launch-0")
    reason = refused(verify(verifier, host, evidence(host, token, qualifying=stale)),
                     "certify_binding")
    assert "extraData" in reason


def test_certify_binding_for_another_token(verifier, host, ttp_key):
    token, _ = make_token(ttp_key)
    other, _ = make_token(ttp_key)
    qualifying = certify_qualifying_data(other, host.ecc_key.name, "launch-1")
    refused(verify(verifier, host, evidence(host, token, qualifying=qualifying)),
            "certify_binding")


def test_bind_key_name_certified_key_is_not_the_presented_one(verifier, host, ttp_key):
    token, _ = make_token(ttp_key)
    body = evidence(host, token, key=host.ecc_key, certified=host.rsa_key)
    reason = refused(verify(verifier, host, body), "bind_key_name")
    assert host.rsa_key.name.hex() in reason


def test_bind_key_public_unparseable(verifier, host, ttp_key):
    token, _ = make_token(ttp_key)
    body = evidence(host, token, bind_key_public=b64(b"\x00\x04abcd"))
    refused(verify(verifier, host, body), "bind_key_name")


def test_bind_key_attributes_signing_key_is_refused(verifier, host, ttp_key):
    """The AK (restricted, sign, userWithAuth) certified by itself is no bind key."""
    from tpm2_pytss.constants import TPM2_ALG
    from tpm2_pytss.types import TPM2B_DATA, TPMT_SIG_SCHEME

    from trusted_launch.tpm.keys import ak_handle

    token, _ = make_token(ttp_key)
    ak_name = host.ak_public.name
    with host.device.esapi("test certify AK") as ectx:
        ak = ak_handle(host.device, ectx)
        attest, signature = ectx.certify(
            ak, ak, TPM2B_DATA(certify_qualifying_data(token, ak_name, "launch-1")),
            TPMT_SIG_SCHEME(scheme=TPM2_ALG.NULL))
    body = evidence(host, token, bind_key_public=b64(host.ak_public.marshal()),
                    certify_info=b64(bytes(attest)), certify_signature=b64(signature.marshal()))
    reason = refused(verify(verifier, host, body), "bind_key_attributes")
    assert "missing DECRYPT" in reason and "USER_WITH_AUTH" in reason


def test_bind_key_policy_selection_too_narrow(verifier, host, ttp_key):
    token, _ = make_token(ttp_key)
    body = evidence(host, token, bind_key_pcrs="sha256:0,1,2,3")
    reason = refused(verify(verifier, host, body), "bind_key_policy")
    assert "sha256:4,5,6,7" in reason


def test_bind_key_policy_does_not_match_the_presented_log(verifier, host, ttp_key):
    """A log of another (well-formed) boot: the key is not locked to what it describes."""
    token, _ = make_token(ttp_key)
    other_log = (EVENTLOG_DIR / "crypto_agile_eventlog").read_bytes()
    reason = refused(verify(verifier, host, evidence(host, token, event_log=b64(other_log))),
                     "bind_key_policy")
    assert "not locked to the boot state the log describes" in reason


def test_bind_key_policy_log_without_the_selected_bank(verifier, host, ttp_key):
    token, _ = make_token(ttp_key)
    legacy = (EVENTLOG_DIR / "windows_gcp_shielded_vm_eventlog").read_bytes()
    reason = refused(verify(verifier, host, evidence(host, token, event_log=b64(legacy))),
                     "bind_key_policy")
    assert "no sha256 bank" in reason


def test_event_log_malformed(verifier, host, ttp_key):
    token, _ = make_token(ttp_key)
    truncated = host.event_log[:-7]
    decision = verify(verifier, host, evidence(host, token, event_log=b64(truncated)))
    assert "offset" in refused(decision, "event_log_malformed")


def test_profile_unknown(verifier, host, ttp_key):
    token, _ = make_token(ttp_key, profile="ultra")
    decision = verify(verifier, host, evidence(host, token))
    assert "'ultra'" in refused(decision, "profile_unknown")
    assert decision.requested_profile == "ultra"


def test_profile_policy_names_the_failed_measurement(ttp_key, host):
    strict = load_profile({"name": "strict", "level": 50, "pcrs": {"sha256": {"0": ["00" * 32]}}})
    verifier = make_verifier(ttp_key, ProfileSet([strict]))
    token, nonce = make_token(ttp_key, profile="strict")
    decision = verify(verifier, host, evidence(host, token))
    reason = refused(decision, "profile_policy")
    assert reason.startswith("host does not meet profile 'strict': PCR 0 (sha256) value ")
    assert nonce.hex() not in reason


def test_profile_cannot_rely_on_pcrs_outside_the_key_policy(ttp_key, host):
    """The log's PCR 14 is not bound by the key (sha256:0-7): a profile pinning it fails."""
    from trusted_launch.evidence.eventlog import parse_event_log, replay

    pcr14 = replay(parse_event_log(host.event_log))
    value = next(bank[14] for bank in pcr14.values())
    profile = load_profile({"name": "pin14", "level": 5,
                            "pcrs": {"sha256": {"14": [value.hex()]}}})
    token, _ = make_token(ttp_key, profile="pin14")
    decision = verify(make_verifier(ttp_key, ProfileSet([profile])), host,
                      evidence(host, token))
    assert "PCR 14 (sha256) has no value" in refused(decision, "profile_policy")


def test_refusals_carry_evidence_digests(verifier, host, ttp_key):
    import hashlib

    token, _ = make_token(ttp_key, profile="ultra")
    decision = verify(verifier, host, evidence(host, token))
    assert decision.evidence_digests["event_log"] == hashlib.sha256(host.event_log).hexdigest()
    assert set(decision.evidence_digests) >= {
        "ak_certificate", "bind_key_public", "certify_info", "certify_signature", "event_log",
        "token", "bind_key_name"}


def test_repeated_verification_releases_fresh_envelopes(verifier, host, ttp_key):
    """The verifier keeps no state between calls (replay is the service's job)."""
    token, _ = make_token(ttp_key)
    request = AttestationRequest.from_json(evidence(host, token))
    decisions = [verifier.verify(request, host.ak_public) for _ in range(3)]
    assert all(d.trusted for d in decisions)
    assert len({d.released for d in decisions}) == 3  # fresh ephemeral key each time


# ---- request parsing (400 bad_request) ------------------------------------------------

GOOD_BODY = {
    "host": "compute-1", "launch_id": "5f0c2a4e-launch", "token": "abc_-123",
    "ak_certificate": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    "bind_key_public": b64(b"public"), "certify_info": b64(b"attest"),
    "certify_signature": b64(b"signature"), "event_log": b64(b"log"),
    "bind_key_pcrs": "sha256:0,1,2,3,4,5,6,7",
}


def test_request_fields_are_decoded():
    request = AttestationRequest.from_json(GOOD_BODY)
    assert request.bind_key_public == b"public" and request.event_log == b"log"
    assert request.ak_certificate_pem.startswith(b"-----BEGIN CERTIFICATE-----")
    assert request.bind_key_pcrs == REQUIRED
    assert "abc_-123" not in repr(request)


@pytest.mark.parametrize(("field", "value", "problem"), [
    ("host", None, "must be a string"),
    ("host", "bad host", "host name"),
    ("launch_id", "", "printable ASCII"),
    ("launch_id", "x" * 256, "longer than 255"),
    ("token", "not base64url!", "base64url"),
    ("token", 42, "must be a string"),
    ("ak_certificate", "MIIB", "PEM certificate"),
    ("bind_key_public", "cHVibGlj\n", "strict standard base64"),
    ("bind_key_public", "cHVibGljA", "strict standard base64"),
    ("bind_key_public", "cHVibGljAB==", "canonical"),
    ("bind_key_public", "cHVibGljYWB=", "canonical"),  # 2 unused bits set in the last group
    ("certify_info", "cHVi=ZWJ", "strict standard base64"),  # padding inside
    ("certify_info", "cHViYg===", "strict standard base64"),  # too much padding
    ("certify_info", "cHVibA==cHVi", "strict standard base64"),  # data after padding
    ("certify_info", "cHVi\u00e9GJj", "strict standard base64"),  # not ASCII
    ("certify_info", "", "empty"),
    ("certify_signature", "-_-_", "strict standard base64"),
    ("event_log", "A" * (4 * (4 * 1024 * 1024 + 2) // 3 + 8), "more than 4194304 bytes"),
    ("bind_key_pcrs", "sha256", "PCR selection"),
    ("bind_key_pcrs", "md5:0", "PCR selection"),
    ("bind_key_pcrs", ["sha256:0"], "must be a string"),
])
def test_bad_fields_are_named(field, value, problem):
    with pytest.raises(RequestInvalid) as info:
        AttestationRequest.from_json({**GOOD_BODY, field: value})
    assert info.value.check == field
    assert problem in info.value.reason
    assert info.value.status == 400


@pytest.mark.parametrize("field", sorted(GOOD_BODY))
def test_missing_fields_are_named(field):
    body = dict(GOOD_BODY)
    del body[field]
    with pytest.raises(RequestInvalid, match="required field is missing") as info:
        AttestationRequest.from_json(body)
    assert info.value.check == field


def test_unknown_fields_and_non_objects_are_refused():
    with pytest.raises(RequestInvalid) as info:
        AttestationRequest.from_json({**GOOD_BODY, "nonce": "x"})
    assert info.value.check == "nonce"
    with pytest.raises(RequestInvalid) as info:
        AttestationRequest.from_json(["not", "an", "object"])
    assert info.value.check == "body"
