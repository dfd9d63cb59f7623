"""Every route x every kind of caller against the real TTP over HTTPS: the policy's answer.

The expectations are written out here, independently of the policy module:
a refused cell must answer exactly (401, authentication_required) without
credentials, (401, invalid_token) with a token the TTP never issued, and
(403, not_authorized) for an authenticated caller without the role; an
allowed cell reaches its handler, whose answer is given per route (bodies
are chosen so that nothing is changed). A route added to the API without a
row here fails :func:`test_the_matrix_covers_every_route`.
"""

from __future__ import annotations

import secrets

import pytest
import webob

from trusted_launch.sandbox.ttp_process import TTPServer
from trusted_launch.ttp import policies

pytestmark = pytest.mark.swtpm

SELF = f"matrix-{secrets.token_hex(3)}"
OTHER = f"matrix-other-{secrets.token_hex(3)}"
CALLERS = ("anonymous", "invalid_token", "admin", "admin_key", "reader", "host_self",
           "host_other")
PUBLIC = frozenset(CALLERS) - {"invalid_token"}
ADMIN = frozenset({"admin", "admin_key"})
READER = ADMIN | {"reader"}
HOST_SELF = frozenset({"host_self"})
NO_ID = "00000000-0000-4000-8000-000000000000"

# (method, path, JSON body or None, callers allowed, (status, check) once allowed)
ROUTES = [
    ("GET", "/", None, PUBLIC, (200, None)),
    ("GET", "/v1", None, PUBLIC, (200, None)),
    ("GET", "/v1/openapi.json", None, PUBLIC, (200, None)),
    ("GET", "/v1/keys", None, PUBLIC, (200, None)),
    ("POST", "/v1/hosts", {}, PUBLIC, (400, "host")),
    ("GET", "/v1/hosts", None, READER, (200, None)),
    ("GET", "/v1/hosts?status=1", None, READER, (200, None)),
    ("GET", f"/v1/hosts/{SELF}", None, READER | HOST_SELF, (404, "host")),
    ("PUT", f"/v1/hosts/{SELF}", {"ek_certificate_sha256": "zz"}, ADMIN,
     (400, "ek_certificate_sha256")),
    ("DELETE", f"/v1/hosts/{SELF}", None, ADMIN, (404, "host")),
    ("POST", f"/v1/hosts/{SELF}/approval", {}, ADMIN, (404, "host")),
    ("POST", f"/v1/hosts/{SELF}/activation", {}, PUBLIC, (400, "secret")),
    ("POST", f"/v1/hosts/{SELF}/challenges", {}, HOST_SELF, (403, "host_unknown")),
    ("POST", f"/v1/hosts/{SELF}/attestations", {}, HOST_SELF, (400, "nonce")),
    ("GET", "/v1/profiles", None, PUBLIC, (200, None)),
    ("GET", "/v1/profiles/high", None, READER, (200, None)),
    ("PUT", "/v1/profiles/matrix-profile", [], ADMIN, (400, "profile")),
    ("DELETE", "/v1/profiles/matrix-none", None, ADMIN, (404, "profile")),
    ("POST", "/v1/attestations", {"host": SELF}, PUBLIC, (400, "launch_id")),
    ("GET", f"/v1/attestations/{NO_ID}", None, READER, (404, "attestation")),
    ("GET", "/v1/receipts/" + "0" * 64, None, PUBLIC, (400, "receipt_proof")),
    ("GET", "/metrics", None, READER, (200, None)),
    ("POST", "/v1/tokens", {}, ADMIN, (400, "role")),
]


@pytest.fixture(scope="module")
def credentials(ttp: TTPServer) -> dict[str, dict[str, str]]:
    """The X-Auth-Token header of each kind of caller."""
    tokens = {"invalid_token": secrets.token_urlsafe(32), "admin": ttp.create_token("admin"),
              "admin_key": ttp.admin_token, "reader": ttp.create_token("reader"),
              "host_self": ttp.create_token("host", SELF),
              "host_other": ttp.create_token("host", OTHER)}
    return {"anonymous": {}, **{name: {"X-Auth-Token": token}
                                for name, token in tokens.items()}}


def _expected(caller: str, path: str, allowed: frozenset[str],
              answer: tuple[int, str | None]) -> tuple[int, str | None]:
    if caller == "invalid_token":
        return 401, "invalid_token"
    if caller in allowed:
        if caller == "host_other" and path == "/v1/attestations":  # for itself only
            return 403, "host_mismatch"
        return answer
    return (401, "authentication_required") if caller == "anonymous" else (403, "not_authorized")


@pytest.mark.parametrize("caller", CALLERS)
@pytest.mark.parametrize(("method", "path", "body", "allowed", "answer"), ROUTES,
                         ids=[f"{r[0]} {r[1]}".replace(SELF, "SELF").replace(OTHER, "OTHER")
                              for r in ROUTES])
def test_route_answers_each_caller_as_the_policy_says(ttp, credentials, caller, method, path,
                                                      body, allowed, answer):
    kwargs = {} if body is None else {"json": body}
    response = ttp.request(method, path, headers=credentials[caller], **kwargs)
    check = response.json()["error"]["check"] if response.status_code >= 400 else None
    assert (response.status_code, check) == _expected(caller, path, allowed, answer), response.text
    if response.status_code == 401:
        assert "X-Auth-Token" in response.headers["WWW-Authenticate"]


def test_the_matrix_covers_every_route(ttp: TTPServer) -> None:
    from trusted_launch.ttp.wsgi import load_config, make_app
    app = make_app(load_config([str(ttp.config_file)]))
    try:
        rules = {rule.name for rule in policies.list_rules()}
        for pattern, methods in app.routes:
            for method, (_, rule) in methods.items():
                assert any(m == method and pattern.match(p.split("?")[0])
                           for m, p, *_ in ROUTES), (pattern.pattern, method)
                names = [rule] if isinstance(rule, str) else [
                    rule(webob.Request.blank("/v1/hosts")),
                    rule(webob.Request.blank("/v1/hosts?status=1"))]
                assert set(names) <= rules, names
    finally:
        app.db.dispose()
