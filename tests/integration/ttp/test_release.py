"""The whole TTP attestation path with real evidence: release once, refuse the replay."""

from __future__ import annotations

import base64
import secrets
import time
import uuid

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from tests.fixtures.ttp import TTPServer
from tests.integration.ttp.test_enrollment import Host, _enroll
from trusted_launch.crypto.binding import certify_qualifying_data
from trusted_launch.crypto.digest import ImageDigest
from trusted_launch.crypto.sealing import open_from_bind_key, release_aad
from trusted_launch.crypto.token import LaunchToken, seal_token
from trusted_launch.tpm import bindkeys

pytestmark = pytest.mark.swtpm
PROFILE = {"name": "flow-any", "level": 1, "description": "any well-formed boot"}


def at_least_as_strict(ttp_server: TTPServer, satisfied: str, requested: str) -> bool:
    """True if profile ``satisfied`` is ``requested`` or stricter (other tests of the
    session may have installed stricter profiles this host also meets)."""
    levels = {p["name"]: p["level"]
              for p in ttp_server.request("GET", "/v1/profiles").json()["profiles"]}
    return levels[satisfied] >= levels[requested]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _current_key(ttp: TTPServer) -> tuple[str, X25519PublicKey]:
    key = ttp.request("GET", "/v1/keys").json()["keys"][0]
    raw = base64.urlsafe_b64decode(key["public_key"] + "=")
    return key["id"], X25519PublicKey.from_public_bytes(raw)


@pytest.fixture
def attested_host(ttp_server: TTPServer, booted_swtpm):
    host = Host(booted_swtpm.tcti)
    name = f"compute-{secrets.token_hex(4)}"
    certificate = _enroll(ttp_server, host, name)
    put = ttp_server.admin("PUT", f"/v1/profiles/{PROFILE['name']}", json=PROFILE)
    assert put.status_code in (200, 201), put.text
    yield host, name, certificate, booted_swtpm.event_log
    host.device.close()


def _attestation(ttp: TTPServer, attested_host, profile: str) -> tuple[dict, bytes, object]:
    host, name, certificate, event_log = attested_host
    nonce = secrets.token_bytes(32)
    key_id, public_key = _current_key(ttp)
    token = seal_token(LaunchToken(nonce=nonce, profile=profile,
                                   image_digest=ImageDigest("sha256", bytes(range(32))),
                                   expires_at=int(time.time()) + 600), public_key, key_id)
    bind_key = bindkeys.create_bind_key(host.device, "ecc")
    launch_id = str(uuid.uuid4())
    attest, signature = bindkeys.certify(
        host.device, bind_key, certify_qualifying_data(token, bind_key.name, launch_id))
    body = {"host": name, "launch_id": launch_id, "token": token,
            "ak_certificate": certificate, "bind_key_public": _b64(bind_key.public),
            "certify_info": _b64(attest), "certify_signature": _b64(signature),
            "event_log": _b64(event_log), "bind_key_pcrs": bind_key.pcr_selection}
    return body, nonce, bind_key


def test_trusted_host_gets_the_nonce_once(ttp_server: TTPServer, attested_host) -> None:
    body, nonce, bind_key = _attestation(ttp_server, attested_host, PROFILE["name"])
    response = ttp_server.request("POST", "/v1/attestations", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["verdict"] == "trusted" and answer["profile"] == PROFILE["name"]
    assert at_least_as_strict(ttp_server, answer["satisfied_profile"], PROFILE["name"])
    device = attested_host[0].device
    released = open_from_bind_key(
        base64.b64decode(answer["released"]), aad=release_aad(body["launch_id"], bind_key.name),
        ecdh_zgen=lambda x, y: bindkeys.ecdh_zgen(device, bind_key, (x, y)))
    assert released.nonce == nonce
    record = ttp_server.admin("GET", f"/v1/attestations/{answer['attestation_id']}")
    assert record.json()["verdict"] == "trusted"
    assert nonce.hex() not in record.text and body["token"] not in record.text

    replay = ttp_server.request("POST", "/v1/attestations", json=body)
    assert replay.status_code == 403, replay.text
    assert replay.json()["error"]["check"] == "token_replayed"
    assert "released" not in replay.json()
    audit = ttp_server.admin("GET", f"/v1/attestations/{replay.json()['attestation_id']}")
    assert audit.json()["check"] == "token_replayed"
    log = ttp_server.log()
    assert answer["attestation_id"] in log  # the decision is logged ...
    assert nonce.hex() not in log and body["token"] not in log  # ... its secrets are not


def test_unknown_profile_is_refused_and_recorded(ttp_server: TTPServer,
                                                 attested_host) -> None:
    body, _, _ = _attestation(ttp_server, attested_host, "no-such-profile")
    response = ttp_server.request("POST", "/v1/attestations", json=body)
    assert response.status_code == 403, response.text
    assert response.json()["error"]["check"] == "profile_unknown"
    assert "released" not in response.json()


def test_concurrent_redemptions_release_exactly_once(ttp_server: TTPServer,
                                                     attested_host) -> None:
    from concurrent.futures import ThreadPoolExecutor

    import requests
    body, _, _ = _attestation(ttp_server, attested_host, PROFILE["name"])

    def post(_: int) -> tuple[int, str | None]:
        response = requests.post(f"{ttp_server.url}/v1/attestations", json=body,
                                 verify=str(ttp_server.ca_file), timeout=60)
        return response.status_code, response.json().get("error", {}).get("check")

    with ThreadPoolExecutor(max_workers=6) as pool:
        outcomes = list(pool.map(post, range(6)))
    assert sorted(outcomes, key=str) == sorted(
        [(200, None)] + [(403, "token_replayed")] * 5, key=str), outcomes
