"""Bad input everywhere: fuzzing the real TTP server over HTTPS.

Hypothesis mutates real, valid request bodies (evidence from a real swtpm
host, a real EK certificate, the example profiles) field by field and byte by
byte, and also sends arbitrary JSON and bytes; schemathesis drives every
operation of the TTP's own OpenAPI document. Every answer must be below 500
and every 4xx must carry the JSON error shape; oversized and deeply nested
bodies are refused without being read or recursed into.
"""

from __future__ import annotations

import base64
import collections
import json
import re
import socket
import ssl
import string
import urllib.parse
import uuid

import pytest
import requests
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable

from tests.security.conftest import PROFILES_DIR
from trusted_launch.client.launch_token import create_launch_token
from trusted_launch.crypto.digest import digest_file
from trusted_launch.sandbox.hosts import ttp_client

pytestmark = pytest.mark.swtpm

EXAMPLES = 100
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))
#: executions and answers by status, per target (printed with -s, asserted below)
COUNTS: collections.Counter = collections.Counter()
CHECKS: collections.Counter = collections.Counter()
ATTESTATION_BINARY = ("bind_key_public", "certify_info", "certify_signature", "event_log")
ATTESTATION_TEXT = ("host", "launch_id", "token", "ak_certificate", "bind_key_pcrs")
ENROLLMENT_BINARY = ("ek_certificate", "ek_public", "ak_public")
RESERVED_PROFILES = {"low", "medium", "high"}
CHECK_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")

json_scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=12), inner, max_size=4),
                           max_leaves=12)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def mutations(data: bytes) -> st.SearchStrategy[bytes]:
    """Bit flips (most often: they keep structures parseable), truncations, insertions,
    overwritten sizes, and unrelated bytes."""
    size = len(data)
    flips = st.tuples(st.integers(0, max(size - 1, 0)), st.integers(1, 255)).map(
        lambda t: data[:t[0]] + bytes([data[t[0]] ^ t[1]]) + data[t[0] + 1:]
        if size else bytes([t[1]]))
    return st.one_of(
        flips, flips, flips,
        st.integers(0, max(size - 1, 0)).map(lambda n: data[:n]),
        st.tuples(st.integers(0, size), st.binary(min_size=1, max_size=16)).map(
            lambda t: data[:t[0]] + t[1] + data[t[0]:]),
        st.tuples(st.integers(0, size), st.sampled_from([b"\x00" * 4, b"\xff" * 4,
                                                         b"\x7f\xff\xff\xff"])).map(
            lambda t: data[:t[0]] + t[1] + data[t[0] + 4:]),
        st.binary(max_size=256))


def binary_field(data: bytes) -> st.SearchStrategy[object]:
    """What an attacker may put in a base64 field: mutated bytes, bad base64, any JSON."""
    encoded = mutations(data).map(_b64)
    return st.one_of(encoded, encoded, encoded, encoded.map(lambda text: text.rstrip("=")),
                     st.text(max_size=64), json_values)


def text_field(value: str) -> st.SearchStrategy[object]:
    return st.one_of(mutations(value.encode()).map(lambda b: b.decode("latin-1")),
                     st.text(max_size=300), json_values)


def mutated_body(base: dict, binary: tuple[str, ...], text: tuple[str, ...]):
    """``base`` with 1-3 fields replaced, maybe one dropped, maybe an unknown one added."""
    fields = {**{name: binary_field(base64.b64decode(base[name])) for name in binary},
              **{name: text_field(base[name]) for name in text}}

    @st.composite
    def build(draw) -> dict:
        body = dict(base)
        names = sorted(binary) if draw(st.integers(0, 3)) else sorted(fields)
        for name in draw(st.sets(st.sampled_from(names), min_size=1, max_size=3)):
            body[name] = draw(fields[name])
        if draw(st.integers(0, 9)) == 7:
            body.pop(draw(st.sampled_from(sorted(body))), None)
        if draw(st.integers(0, 19)) == 7:
            body[draw(st.text(min_size=1, max_size=10))] = draw(json_values)
        return body

    return build()


def check_answer(response: requests.Response, target: str) -> None:
    """Below 500; a 4xx is JSON ``{"error": {"code", "check", "reason"}}`` of strings."""
    COUNTS[target] += 1
    COUNTS[f"{target} {response.status_code}"] += 1
    assert response.status_code < 500, (target, response.status_code, response.text[:500])
    if response.status_code >= 400:
        assert response.headers["Content-Type"].startswith("application/json"), response.text
        error = response.json()["error"]
        CHECKS[f"{target} {response.status_code} {error.get('check')}"] += 1
        assert all(isinstance(error[key], str) and error[key]
                   for key in ("code", "check", "reason")), error
        assert CHECK_NAME.fullmatch(error["check"]), error  # machine-readable


@pytest.fixture(scope="module")
def session(ttp) -> requests.Session:
    with requests.Session() as opened:
        opened.verify = str(ttp.ca_file)
        opened.trust_env = False  # REQUESTS_CA_BUNDLE would override verify
        yield opened


@pytest.fixture(scope="module")
def attestation_body(hosts, ttp, image, tmp_path_factory) -> dict:
    """A valid, unredeemed attestation request of the trusted host."""
    token, _ = create_launch_token(ttp.url, "high", digest_file(image, "sha512"),
                                   ca_file=str(ttp.ca_file),
                                   nonce_dir=tmp_path_factory.mktemp("fuzz-nonce"))
    return hosts["trusted"].runner.evidence(token=token, launch_id=str(uuid.uuid4()))[1]


@pytest.fixture(scope="module")
def enrollment_body(hosts) -> dict:
    device = hosts["untrusted"].device
    return {"host": "fz-host", "ek_certificate": _b64(device.ek_certificate()),
            "ek_public": _b64(device.ek_public()),
            "ak_public": _b64(device.ensure_attestation_key().public)}


def test_attestation_bodies(ttp, session, attestation_body):
    # the unmutated body is accepted: the mutations below start from a valid request
    assert ttp_client(ttp).attest(attestation_body)["verdict"] == "trusted"

    @SETTINGS
    @given(body=mutated_body(attestation_body, ATTESTATION_BINARY, ATTESTATION_TEXT))
    def run(body: dict) -> None:
        check_answer(session.post(ttp.url + "/v1/attestations", json=body, timeout=30),
                     "POST /v1/attestations")

    run()
    assert COUNTS["POST /v1/attestations 403"] > 0  # mutations reached the verifier


def test_enrollment_bodies(ttp, session, enrollment_body):
    names = st.text(string.ascii_lowercase + string.digits, min_size=1, max_size=12).map(
        lambda s: f"fz-{s}")

    @SETTINGS
    @given(body=mutated_body(enrollment_body, ENROLLMENT_BINARY, ("host",)), name=names)
    def run(body: dict, name: str) -> None:
        if body.get("host") == enrollment_body["host"]:
            body["host"] = name
        check_answer(session.post(ttp.url + "/v1/hosts", json=body, timeout=30),
                     "POST /v1/hosts")

    run()


def test_activation_bodies_and_host_paths(ttp, session, hosts):
    names = st.one_of(st.sampled_from([hosts["trusted"].name, "fz-host"]),
                      st.text(min_size=1, max_size=40))
    bodies = st.one_of(st.binary(max_size=80).map(lambda b: {"secret": _b64(b)}),
                       st.dictionaries(st.sampled_from(["secret", "x"]), json_values),
                       json_values)

    @SETTINGS
    @given(name=names, body=bodies)
    def run(name: str, body: object) -> None:
        path = "/v1/hosts/" + urllib.parse.quote(name, safe="")
        check_answer(session.post(ttp.url + path + "/activation", json=body, timeout=30),
                     "POST /v1/hosts/{host}/activation")
        check_answer(session.get(ttp.url + path, headers=admin, timeout=30),
                     "GET /v1/hosts/{host}")

    admin = {"X-Auth-Token": ttp.admin_token}
    run()
    # the enrolled host is still active after every wrong answer
    assert session.get(f"{ttp.url}/v1/hosts/{hosts['trusted'].name}", headers=admin
                       ).json()["state"] == "active"


def _profile_documents() -> st.SearchStrategy[object]:
    real = yaml.safe_load((PROFILES_DIR / "high.yaml").read_text())
    keys = sorted(real)
    return st.one_of(
        json_values,
        st.tuples(st.sampled_from(keys), json_values).map(lambda t: {**real, t[0]: t[1]}),
        st.sampled_from(keys).map(lambda k: {n: v for n, v in real.items() if n != k}),
        st.integers(-5, 2**40).map(lambda level: {**real, "level": level}))


def test_profile_documents(ttp, session):
    names = st.one_of(st.text(string.ascii_lowercase + string.digits, min_size=1,
                              max_size=10).map(lambda s: f"fz{s}"),
                      st.text(min_size=1, max_size=40))
    payloads = st.one_of(
        _profile_documents().map(lambda d: ("application/json", json.dumps(d).encode())),
        _profile_documents().map(lambda d: ("application/yaml", yaml.safe_dump(d).encode())),
        st.text(max_size=200).map(lambda t: ("application/yaml", t.encode())),
        st.binary(max_size=200).map(lambda b: ("application/yaml", b)))
    headers = {"X-Auth-Token": ttp.admin_token}

    @SETTINGS
    @given(name=names, payload=payloads, rename=st.booleans())
    def run(name: str, payload: tuple[str, bytes], rename: bool) -> None:
        if name in RESERVED_PROFILES:
            return
        ctype, data = payload
        if rename and ctype == "application/json":  # make the URL and the name agree
            document = json.loads(data)
            if isinstance(document, dict):
                data = json.dumps({**document, "name": name}).encode()
        path = "/v1/profiles/" + urllib.parse.quote(name, safe="")
        answer = session.put(ttp.url + path, data=data, timeout=30,
                             headers={**headers, "Content-Type": ctype})
        check_answer(answer, "PUT /v1/profiles/{name}")
        if answer.status_code == 201:  # do not leave a profile other tests would see
            assert session.delete(ttp.url + path, headers=headers).status_code == 204

    run()
    listed = {p["name"] for p in session.get(ttp.url + "/v1/profiles").json()["profiles"]}
    assert listed == RESERVED_PROFILES


@SETTINGS
@given(data=st.binary(max_size=300), path=st.sampled_from([
    "/v1/attestations", "/v1/hosts", "/v1/hosts/fz-host/activation"]),
    ctype=st.sampled_from(["application/json", "", "text/plain", "application/json; x=\x7f"]))
def test_raw_bodies(ttp, session, data, path, ctype):
    headers = {"Content-Type": ctype} if ctype else {}
    check_answer(session.post(ttp.url + path, data=data, headers=headers, timeout=30),
                 f"POST {path} raw")


@pytest.mark.parametrize("path", ["/v1/attestations", "/v1/hosts",
                                  "/v1/hosts/fz-host/activation"])
@pytest.mark.parametrize("name", ["", " ", "\u202e"])
def test_unknown_field_with_a_blank_name_is_named(ttp, session, path, name):
    """Found by the fuzzer: an unknown field "" was refused with an empty check name."""
    answer = session.post(ttp.url + path, json={name: 1}, timeout=30)
    check_answer(answer, "blank field name")
    assert answer.status_code == 400


@SETTINGS
@given(segment=st.binary(min_size=1, max_size=40),
       route=st.sampled_from(["/v1/hosts{}", "/v1/hosts/{}", "/v1/hosts/{}/activation",
                              "/v1/hosts/{}/challenges", "/v1/hosts/{}/attestations",
                              "/v1/profiles/{}", "/v1/attestations/{}", "/v1/{}", "/{}"]),
       method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]),
       query=st.binary(max_size=12))
def test_paths_with_any_bytes(ttp, session, segment, route, method, query):
    """Percent-encoded arbitrary bytes (invalid UTF-8 included) in every route and query."""
    path = route.format(urllib.parse.quote(segment, safe="")) + "?status=" + \
        urllib.parse.quote(query, safe="")
    check_answer(session.request(method, ttp.url + path, json={}, timeout=30), "paths")


def _raw(ttp, request: bytes) -> bytes:
    """The answer to raw bytes; a server that waits for more fails the test (timeout)."""
    context = ssl.create_default_context(cafile=str(ttp.ca_file))
    with socket.create_connection(("127.0.0.1", ttp.port), timeout=10) as plain, \
            context.wrap_socket(plain, server_hostname="127.0.0.1") as tls:
        tls.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            chunk = tls.recv(65536)
            if not chunk:
                break
            answer += chunk
    COUNTS["raw http"] += 1
    return answer


@pytest.mark.parametrize(("label", "head", "body"), [
    ("bad chunk size", "Transfer-Encoding: chunked", b"zz\r\n{}\r\n0\r\n\r\n"),
    ("negative length", "Content-Length: -1", b"{}"),
])
def test_malformed_framing_is_400_at_once(ttp, label, head, body):
    """Found by probing: a bad chunk size was a 500, a negative length hung a thread."""
    answer = _raw(ttp, f"POST /v1/hosts HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                       f"Content-Type: application/json\r\n{head}\r\n\r\n".encode() + body)
    assert _status(answer) == 400, (label, answer[:300])
    assert b'"bad_request"' in answer


# -- size and depth -------------------------------------------------------------------

def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


@pytest.mark.parametrize("length", [262_145, 1 << 30])
@pytest.mark.parametrize("path", ["/v1/attestations", "/v1/hosts", "/v1/profiles/fzbig"])
def test_oversized_declared_body_is_refused_unread(ttp, path, length):
    """Over the limit announced, nothing sent: the server answers 413 instead of waiting."""
    head = (f"{'PUT' if 'profiles' in path else 'POST'} {path} HTTP/1.1\r\n"
            f"Host: 127.0.0.1\r\nConnection: close\r\nX-Auth-Token: {ttp.admin_token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n").encode()
    answer = ttp.raw(head)
    COUNTS["oversized"] += 1
    assert _status(answer) == 413
    assert b'"payload_too_large"' in answer


@pytest.mark.parametrize("depth", [40, 1000, 100_000])
@pytest.mark.parametrize("path", ["/v1/attestations", "/v1/hosts"])
def test_deeply_nested_json_is_400(ttp, session, depth, path):
    body = "[" * depth + "]" * depth
    answer = session.post(ttp.url + path, data=body.encode(),
                          headers={"Content-Type": "application/json"}, timeout=30)
    assert answer.status_code == 400
    check_answer(answer, "deep json")


@pytest.mark.parametrize("document", [
    "[" * 50_000 + "]" * 50_000, "a: " * 5000 + "1", "- " * 5000 + "x",
    "&a [" + "*a," * 10 + "]"])
def test_deeply_nested_or_recursive_yaml_profile_is_400(ttp, session, document):
    answer = session.put(ttp.url + "/v1/profiles/fzyaml", data=document.encode(),
                         headers={"X-Auth-Token": ttp.admin_token,
                                  "Content-Type": "application/yaml"}, timeout=30)
    assert answer.status_code == 400, answer.text[:300]
    check_answer(answer, "deep yaml")


# -- schemathesis over the TTP's own OpenAPI document ---------------------------------

def test_schemathesis_every_operation(ttp, session):
    import schemathesis
    from schemathesis import GenerationMode

    document = session.get(ttp.url + "/v1/openapi.json", timeout=30).json()
    schema = schemathesis.openapi.from_dict(document)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    headers = {"X-Auth-Token": ttp.admin_token}
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            @settings(max_examples=15, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case) -> None:
                name = (case.path_parameters or {}).get("name")
                if case.method.upper() in ("PUT", "DELETE") and name in RESERVED_PROFILES:
                    return
                response = case.call(base_url=ttp.url, session=session, headers=headers,
                                     timeout=30, verify=str(ttp.ca_file))
                COUNTS["schemathesis"] += 1
                assert response.status_code < 500, (case.method, case.path,
                                                     response.status_code,
                                                     response.text[:300])
                if response.status_code >= 400:
                    assert set(response.json()["error"]) == {"code", "check", "reason"}
                if case.method.upper() == "PUT" and response.status_code == 201:
                    session.delete(ttp.url + case.formatted_path, headers=headers)

            try:
                run()
            except Unsatisfiable:  # e.g. no negative case exists for a parameterless GET
                COUNTS["schemathesis unsatisfiable"] += 1
    assert COUNTS["schemathesis"] > 100


def test_fuzz_counts_and_server_health(ttp, session):
    """The server survived everything above and still answers; print what was sent."""
    print("\nfuzz executions:", dict(sorted(COUNTS.items())))
    print("refusals by check:", dict(sorted(CHECKS.items())))
    assert session.get(ttp.url + "/v1/keys", timeout=30).status_code == 200
    assert " ERROR trusted_launch." not in ttp.log()  # no 500, no unexpected exception


def test_fuzz_left_no_profiles_behind(ttp, session):
    listed = {p["name"] for p in session.get(ttp.url + "/v1/profiles").json()["profiles"]}
    assert listed == RESERVED_PROFILES



