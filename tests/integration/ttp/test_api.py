"""The TTP's HTTP surface: versions, OpenAPI, keys, TLS, limits, profiles, errors."""

from __future__ import annotations

import json

import pytest
import requests

from tests.fixtures.ttp import CertificateAuthority, TTPServer

EXAMPLE_PROFILE = {"name": "api-low", "level": 11, "require_secure_boot": False,
                   "description": "test profile"}


def _error(response: requests.Response) -> dict:
    body = response.json()
    assert set(body["error"]) == {"code", "check", "reason"}
    return body["error"]


def test_versions_and_v1(ttp_server: TTPServer) -> None:
    versions = ttp_server.request("GET", "/").json()["versions"]
    assert [v["id"] for v in versions] == ["v1"]
    assert versions[0]["links"][0]["href"] == f"{ttp_server.url}/v1"
    links = ttp_server.request("GET", "/v1").json()["version"]["links"]
    assert {link["rel"] for link in links} == {"self", "describedby"}


def test_openapi_document_lists_every_route(ttp_server: TTPServer) -> None:
    response = ttp_server.request("GET", "/v1/openapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["openapi"].startswith("3.")
    assert {"/v1/keys", "/v1/hosts", "/v1/hosts/{host}/activation", "/v1/profiles/{name}",
            "/v1/attestations", "/v1/attestations/{attestation_id}"} <= set(document["paths"])
    schemas = document["components"]["schemas"]
    assert set(schemas["AttestationRequest"]["required"]) == {
        "host", "launch_id", "token", "ak_certificate", "bind_key_public", "certify_info",
        "certify_signature", "event_log", "bind_key_pcrs"}


def test_openapi_document_is_valid_openapi(ttp_server: TTPServer) -> None:
    schemathesis = pytest.importorskip("schemathesis")
    schema = schemathesis.openapi.from_dict(ttp_server.request("GET", "/v1/openapi.json").json())
    operations = [op.ok() for op in schema.get_all_operations()]
    assert len(operations) >= 12


def test_keys_endpoint_publishes_current_key(ttp_server: TTPServer) -> None:
    keys = ttp_server.request("GET", "/v1/keys").json()["keys"]
    assert keys[0]["algorithm"] == "hpke-x25519-hkdf-sha256-aes128gcm"
    assert keys[0]["not_after"] is None
    assert len(keys[0]["public_key"]) == 43  # 32 bytes base64url, no padding


def test_untrusted_server_certificate_fails_tls(ttp_server: TTPServer,
                                                other_test_ca: CertificateAuthority) -> None:
    with pytest.raises(requests.exceptions.SSLError):
        ttp_server.request("GET", "/", verify=str(other_test_ca.cert_file))


def test_plain_http_is_not_served(ttp_server: TTPServer) -> None:
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://127.0.0.1:{ttp_server.port}/", timeout=10)


def test_unknown_path_and_method(ttp_server: TTPServer) -> None:
    missing = ttp_server.request("GET", "/v1/nothing")
    assert missing.status_code == 404 and _error(missing)["check"] == "path"
    wrong = ttp_server.request("DELETE", "/v1/keys")
    assert wrong.status_code == 405 and _error(wrong)["code"] == "method_not_allowed"
    assert wrong.headers["Allow"] == "GET"


def test_oversized_body_is_refused_unread(ttp_server: TTPServer) -> None:
    # Only the headers are sent: the 413 must come without waiting for the body.
    head = (b"POST /v1/attestations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 300000\r\n\r\n")
    answer = ttp_server.raw(head)
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b'"code":"payload_too_large"' in answer


def test_oversized_chunked_body_is_refused(ttp_server: TTPServer) -> None:
    """The server stops reading at the limit: the client sees 413, or, when it is
    still sending as the server answers and closes, a closed connection."""
    chunks = (b"[" * 10_000 for _ in range(40))
    try:
        response = ttp_server.request("POST", "/v1/hosts", data=chunks,
                                      headers={"Content-Type": "application/json"})
    except requests.ConnectionError:
        response = None
    assert response is None or response.status_code == 413
    assert ttp_server.request("GET", "/").status_code == 200


@pytest.mark.parametrize("body", [b"{", b"\xff\xfe", b"[1, NaN]", b"{\"a\": 1} x", b""])
def test_malformed_json_is_400(ttp_server: TTPServer, body: bytes) -> None:
    response = ttp_server.request("POST", "/v1/hosts", data=body,
                                  headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert _error(response)["check"] == "body"


def test_deep_json_is_400(ttp_server: TTPServer) -> None:
    for depth in (17, 50_000):
        body = b"[" * depth + b"]" * depth
        response = ttp_server.request("POST", "/v1/attestations", data=body,
                                      headers={"Content-Type": "application/json"})
        assert response.status_code == 400, depth
        assert "nested" in _error(response)["reason"]


def test_wrong_content_type_is_415(ttp_server: TTPServer) -> None:
    response = ttp_server.request("POST", "/v1/hosts", data="host=a",
                                  headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 415


def test_profiles_require_the_admin_token(ttp_server: TTPServer) -> None:
    anonymous = ttp_server.request("PUT", "/v1/profiles/api-low", json=EXAMPLE_PROFILE)
    assert anonymous.status_code == 401
    assert _error(anonymous)["check"] == "authentication_required"
    wrong = ttp_server.request("PUT", "/v1/profiles/api-low", json=EXAMPLE_PROFILE,
                               headers={"X-Auth-Token": "not-it"})
    assert wrong.status_code == 401 and _error(wrong)["check"] == "invalid_token"
    assert ttp_server.admin("GET", "/v1/profiles/api-low").status_code == 404
    assert ttp_server.request("DELETE", "/v1/profiles/api-low").status_code == 401


def test_profile_crud(ttp_server: TTPServer) -> None:
    created = ttp_server.admin("PUT", "/v1/profiles/api-low", json=EXAMPLE_PROFILE)
    assert created.status_code == 201, created.text
    assert ttp_server.admin("GET", "/v1/profiles/api-low").json()["level"] == 11
    yaml_doc = "name: api-low\nlevel: 12\nrequire_secure_boot: true\n"
    replaced = ttp_server.admin("PUT", "/v1/profiles/api-low", data=yaml_doc,
                                headers={"Content-Type": "application/yaml"})
    assert replaced.status_code == 200, replaced.text
    listed = ttp_server.request("GET", "/v1/profiles").json()["profiles"]
    assert {"name": "api-low", "level": 12, "description": ""} in listed
    assert ttp_server.admin("GET", "/v1/profiles/api-low").json()["require_secure_boot"]
    assert ttp_server.admin("DELETE", "/v1/profiles/api-low").status_code == 204
    assert ttp_server.admin("GET", "/v1/profiles/api-low").status_code == 404
    assert ttp_server.admin("DELETE", "/v1/profiles/api-low").status_code == 404


@pytest.mark.parametrize(("document", "check"), [
    ({**EXAMPLE_PROFILE, "name": "other"}, "name"),
    ({**EXAMPLE_PROFILE, "level": "high"}, "profile"),
    ({**EXAMPLE_PROFILE, "surprise": 1}, "profile"),
    ({**EXAMPLE_PROFILE, "pcrs": {"sha256": {"0": ["zz"]}}}, "profile"),
])
def test_invalid_profiles_are_400(ttp_server: TTPServer, document: dict, check: str) -> None:
    response = ttp_server.admin("PUT", "/v1/profiles/api-low", json=document)
    assert response.status_code == 400, response.text
    assert _error(response)["check"] == check


def test_yaml_alias_bomb_is_400(ttp_server: TTPServer) -> None:
    bomb = "a: &a [x, x]\nb: &b [*a, *a]\nc: [*b, *b]\nname: api-low\nlevel: 11\n"
    response = ttp_server.admin("PUT", "/v1/profiles/api-low", data=bomb,
                                headers={"Content-Type": "application/yaml"})
    assert response.status_code == 400 and "alias" in _error(response)["reason"]


def test_profile_levels_stay_unique(ttp_server: TTPServer) -> None:
    first = {"name": "lvl-a", "level": 500}
    assert ttp_server.admin("PUT", "/v1/profiles/lvl-a", json=first).status_code == 201
    clash = ttp_server.admin("PUT", "/v1/profiles/lvl-b", json={"name": "lvl-b", "level": 500})
    assert clash.status_code == 409 and _error(clash)["check"] == "profile_level"
    assert ttp_server.admin("DELETE", "/v1/profiles/lvl-a").status_code == 204


def test_key_rotation_keeps_the_previous_key_during_overlap(ttp_server: TTPServer) -> None:
    before = ttp_server.request("GET", "/v1/keys").json()["keys"]
    rotated = ttp_server.manage("keys", "rotate")
    assert rotated.returncode == 0, rotated.stderr
    new_id = rotated.stdout.strip()
    after = ttp_server.request("GET", "/v1/keys").json()["keys"]
    assert after[0]["id"] == new_id and after[0]["not_after"] is None
    previous = {key["id"]: key for key in after[1:]}
    assert before[0]["id"] in previous
    assert previous[before[0]["id"]]["not_after"] is not None
    listed = ttp_server.manage("keys", "list")
    assert new_id in listed.stdout and before[0]["id"] in listed.stdout


def test_attestation_with_garbage_fields_names_the_field(ttp_server: TTPServer) -> None:
    body = {"host": "h", "launch_id": "l", "token": "t", "ak_certificate": "x",
            "bind_key_public": "!!notbase64", "certify_info": "AA==",
            "certify_signature": "AA==", "event_log": "AA==",
            "bind_key_pcrs": "sha256:0"}
    response = ttp_server.request("POST", "/v1/attestations", json=body)
    assert response.status_code == 400
    assert _error(response)["check"] in {"ak_certificate", "bind_key_public"}
    unknown = ttp_server.request("POST", "/v1/attestations", json={**body, "extra": 1})
    assert unknown.status_code == 400 and _error(unknown)["check"] == "extra"
    not_object = ttp_server.request("POST", "/v1/attestations", data=json.dumps([1]),
                                    headers={"Content-Type": "application/json"})
    assert not_object.status_code == 400


def test_unknown_attestation_id_is_404(ttp_server: TTPServer) -> None:
    assert ttp_server.admin("GET", "/v1/attestations/nope").status_code == 404
    missing = "00000000-0000-4000-8000-000000000000"
    assert ttp_server.admin("GET", f"/v1/attestations/{missing}").status_code == 404
