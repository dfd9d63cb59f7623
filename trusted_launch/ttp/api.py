"""The TTP's REST API (/v1) as a WSGI application.

JSON in and out; every error is ``{"error": {"code", "check", "reason"}}``
with a 4xx status (503 when the database is unavailable). Bodies over the
configured limit are refused with 413 before they are read. Every route
names its policy rule (:mod:`trusted_launch.ttp.policies`); the caller is
authenticated and authorized before the handler runs, so a route without a
rule cannot be reached.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass

import webob
from oslo_log import log as logging

from trusted_launch.ttp import metrics
from trusted_launch.ttp.auth import Authenticator, Authorizer, Principal, new_token
from trusted_launch.ttp.db.access import AccessStore
from trusted_launch.ttp.db.api import DatabaseError, TTPDatabase
from trusted_launch.ttp.enrollment import Enrollment
from trusted_launch.ttp.errors import (
    APIError,
    BadRequest,
    Forbidden,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    UnsupportedMediaType,
)
from trusted_launch.ttp.host_status import HostStatusService
from trusted_launch.ttp.keystore import KeyStoreError, TokenKeyStore
from trusted_launch.ttp.openapi import openapi_document
from trusted_launch.ttp.profiles import ProfileStore
from trusted_launch.ttp.receipts import PROOF_HEADER, ReceiptIssuer
from trusted_launch.ttp.registry import FINGERPRINT_FIELD, HostRegistry
from trusted_launch.ttp.service import AttestationService

LOG = logging.getLogger(__name__)
VERSION = "v1"
_NAME = r"(?P<name>[^/]{1,255})"
_HOST = r"(?P<host>[^/]{1,255})"
PRINCIPAL = "trusted_launch.principal"
Rule = str | Callable[[webob.Request], str]
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@dataclass(frozen=True)
class Limits:
    """Request body limits."""

    max_body: int
    max_depth: int


def json_response(status: int, body: object) -> webob.Response:
    """A JSON response that caches nowhere."""
    response = webob.Response(status=status, content_type="application/json", charset="utf-8")
    response.body = json.dumps(body, separators=(",", ":")).encode()
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def _depth(value: object) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        children = item.values() if isinstance(item, dict) else item \
            if isinstance(item, list) else ()
        stack.extend((child, depth + 1) for child in children)
    return deepest


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


def read_body(request: webob.Request, limits: Limits) -> bytes:
    """The raw body, refusing oversized ones (413) before reading when the length is known."""
    length = request.content_length
    if length is not None and length < 0:
        raise BadRequest("body", "Content-Length is negative")
    if length is not None and length > limits.max_body:
        raise PayloadTooLarge("body", f"larger than {limits.max_body} bytes")
    try:
        data = request.body_file_raw.read(limits.max_body + 1) if length is None \
            else request.body_file_raw.read(length)
    except ValueError:  # the server's chunked decoder: a chunk size that is not hex
        raise BadRequest("body", "malformed chunked transfer encoding") from None
    if len(data) > limits.max_body:
        raise PayloadTooLarge("body", f"larger than {limits.max_body} bytes")
    return data


def parse_json(data: bytes, limits: Limits) -> object:
    """Decode a JSON body: UTF-8, no NaN/Infinity, bounded nesting; else 400."""
    try:
        value = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise BadRequest("body", f"not UTF-8 at byte {exc.start}") from exc
    except RecursionError as exc:
        raise BadRequest("body", "JSON nested too deeply") from exc
    except ValueError as exc:
        raise BadRequest("body", f"not valid JSON: {exc}") from exc
    if _depth(value) > limits.max_depth:
        raise BadRequest("body", f"JSON nested deeper than {limits.max_depth}")
    return value


def _hosts_rule(request: webob.Request) -> str:
    return "ttp:hosts:status" if "status" in request.GET else "ttp:hosts:list"


@dataclass(frozen=True)
class Access:
    """Who may call what: the authenticator, the policy, the operator's host registry."""

    authenticator: Authenticator
    authorizer: Authorizer
    registry: HostRegistry
    store: AccessStore


def error_answer(exc: Exception, what: str) -> tuple[int, dict]:
    """(status, ``{"error": ...}`` body) for what a request handler raised.

    Shared by every transport (HTTPS here, RPC in :mod:`.rpc`), so a refusal
    reads the same whichever way it travelled. ``what`` names the request in the log.
    """
    if isinstance(exc, APIError):
        return exc.status, exc.body()
    if isinstance(exc, (DatabaseError, KeyStoreError)):
        LOG.error("%s: %s", what, exc)
        error = ServiceUnavailable("service", "a backing store is unavailable")
        return error.status, error.body()
    LOG.error("%s failed", what, exc_info=exc)
    return 500, {"error": {"code": "internal_error", "check": "internal",
                           "reason": "internal error"}}


class TTPApplication:
    """Routes /v1 requests to the enrollment, profile and attestation handlers."""

    def __init__(self, *, db: TTPDatabase, token_keys: TokenKeyStore, enrollment: Enrollment,
                 profiles: ProfileStore, attestations: AttestationService, access: Access,
                 limits: Limits, receipts: ReceiptIssuer | None = None,
                 host_status: HostStatusService | None = None) -> None:
        self.db, self.token_keys, self.enrollment = db, token_keys, enrollment
        self.profiles, self.attestations, self.receipts = profiles, attestations, receipts
        self.host_status, self.access = host_status, access
        self.limits = limits
        self.routes: list[tuple[re.Pattern, dict[str, tuple[Callable, Rule]]]] = [
            (re.compile(r"^/?$"), {"GET": (self.versions, "ttp:versions:get")}),
            (re.compile(r"^/v1/?$"), {"GET": (self.version, "ttp:versions:get")}),
            (re.compile(r"^/v1/openapi\.json$"), {"GET": (self.openapi, "ttp:openapi:get")}),
            (re.compile(r"^/v1/keys$"), {"GET": (self.keys, "ttp:keys:get")}),
            (re.compile(r"^/v1/hosts$"), {"POST": (self.enroll, "ttp:hosts:enroll"),
                                          "GET": (self.list_hosts, _hosts_rule)}),
            (re.compile(rf"^/v1/hosts/{_HOST}$"), {
                "GET": (self.get_host, "ttp:hosts:get"),
                "PUT": (self.register_host, "ttp:hosts:register"),
                "DELETE": (self.remove_host, "ttp:hosts:remove")}),
            (re.compile(rf"^/v1/hosts/{_HOST}/approval$"), {
                "POST": (self.approve_host, "ttp:hosts:approve")}),
            (re.compile(rf"^/v1/hosts/{_HOST}/activation$"), {
                "POST": (self.activate, "ttp:hosts:activate")}),
            (re.compile(rf"^/v1/hosts/{_HOST}/challenges$"), {
                "POST": (self.host_challenge, "ttp:hosts:challenge")}),
            (re.compile(rf"^/v1/hosts/{_HOST}/attestations$"), {
                "POST": (self.host_attest, "ttp:hosts:attest")}),
            (re.compile(r"^/v1/profiles$"), {"GET": (self.list_profiles, "ttp:profiles:list")}),
            (re.compile(rf"^/v1/profiles/{_NAME}$"), {
                "GET": (self.get_profile, "ttp:profiles:get"),
                "PUT": (self.put_profile, "ttp:profiles:put"),
                "DELETE": (self.delete_profile, "ttp:profiles:delete")}),
            (re.compile(r"^/v1/attestations$"), {
                "POST": (self.attest, "ttp:attestations:create")}),
            (re.compile(rf"^/v1/attestations/{_NAME}$"), {
                "GET": (self.get_attestation, "ttp:attestations:get")}),
            (re.compile(rf"^/v1/receipts/{_NAME}$"), {
                "GET": (self.get_receipts, "ttp:receipts:get")}),
            (re.compile(r"^/v1/tokens$"), {"POST": (self.create_token, "ttp:tokens:create")}),
            (re.compile(r"^/metrics$"), {"GET": (self.metrics_endpoint, "ttp:metrics:get")}),
        ]

    def __call__(self, environ: dict, start_response: Callable) -> object:
        request = webob.Request(environ)
        try:
            response = self.dispatch(request)
        except Exception as exc:
            what = f"{request.method} {environ.get('PATH_INFO', '')[:200]!r}"
            response = json_response(*error_answer(exc, what))
            if isinstance(exc, APIError):
                response.headers.update(exc.headers)
        return response(environ, start_response)

    def dispatch(self, request: webob.Request) -> webob.Response:
        """Find the handler for the request's path and method (else 404/405), authorize, run."""
        try:
            path = request.path_info
        except UnicodeDecodeError:
            raise BadRequest("path", "the path is not UTF-8 once percent-decoded") from None
        for pattern, methods in self.routes:
            match = pattern.match(path)
            if match is None:
                continue
            entry = methods.get(request.method)
            if entry is None:
                allowed = ", ".join(sorted(methods))
                raise MethodNotAllowed("method", f"{request.method[:16]} is not allowed here; "
                                                 f"use {allowed}", headers={"Allow": allowed})
            handler, rule = entry
            self.authorize(request, rule if isinstance(rule, str) else rule(request),
                           match.groupdict())
            return handler(request, **match.groupdict())
        raise NotFound("path", f"no resource at {path[:100]!r}")

    def authorize(self, request: webob.Request, rule: str,
                  target: dict | None = None) -> Principal:
        """Authenticate the caller and check ``rule`` on ``target``; 401/403 if refused.

        Also the hook for routes mounted beside the API (``ttp:metrics:get``).
        """
        principal = self.access.authenticator.authenticate(request.environ)
        request.environ[PRINCIPAL] = principal
        self.access.authorizer.check(rule, target or {}, principal)
        return principal

    # helpers -------------------------------------------------------------

    def _json_body(self, request: webob.Request) -> object:
        ctype = request.content_type
        if ctype and ctype != "application/json":
            raise UnsupportedMediaType("content_type", "send application/json")
        return parse_json(read_body(request, self.limits), self.limits)

    def _json_object(self, request: webob.Request) -> dict:
        body = self._json_body(request)
        if not isinstance(body, dict):
            raise BadRequest("body", "must be a JSON object")
        return body

    def _optional_object(self, request: webob.Request) -> dict:
        """A JSON object body, or {} when there is no body."""
        if not request.content_length and request.headers.get("Transfer-Encoding") is None:
            return {}
        return self._json_object(request)

    @staticmethod
    def _requester(request: webob.Request) -> str:
        principal = request.environ.get(PRINCIPAL)
        if principal is not None and not principal.anonymous:
            return principal.label
        dn = request.environ.get("SSL_CLIENT_S_DN_CN")
        return f"cn={dn}" if dn else f"addr={request.remote_addr or 'unknown'}"

    # handlers ------------------------------------------------------------

    def versions(self, request: webob.Request) -> webob.Response:
        base = request.host_url
        return json_response(200, {"versions": [
            {"id": VERSION, "status": "CURRENT", "links": [{"rel": "self",
                                                             "href": f"{base}/{VERSION}"}]}]})

    def version(self, request: webob.Request) -> webob.Response:
        base = f"{request.host_url}/{VERSION}"
        return json_response(200, {"version": {"id": VERSION, "status": "CURRENT", "links": [
            {"rel": "self", "href": base},
            {"rel": "describedby", "href": f"{base}/openapi.json"}]}})

    def openapi(self, request: webob.Request) -> webob.Response:
        return json_response(200, openapi_document(request.host_url))

    def keys(self, request: webob.Request) -> webob.Response:
        body: dict = {"keys": [k.publication() for k in self.token_keys.keys()]}
        if self.receipts is not None:
            body["receipt_keys"] = [self.receipts.key.publication()]
        try:  # the names help tenants spell a profile; keys stay available without them
            body["profiles"] = self.profiles.profile_set().names()
        except DatabaseError as exc:
            LOG.warning("GET /v1/keys without profile names: %s", exc)
        return json_response(200, body)

    def enroll(self, request: webob.Request) -> webob.Response:
        challenge = self.enrollment.enroll(self._json_object(request))
        return json_response(201, challenge.to_json())

    def activate(self, request: webob.Request, host: str) -> webob.Response:
        pem = self.enrollment.activate(host, self._json_object(request),
                                       request.remote_addr or "unknown")
        return json_response(200, {"ak_certificate": pem})

    def get_host(self, request: webob.Request, host: str) -> webob.Response:
        registration = self.access.registry.get(host).to_json()
        last = None if self.host_status is None else self.host_status.last_attested_at(host)
        return json_response(200, {**registration, "last_attested_at": last})

    @staticmethod
    def _fingerprint(body: dict) -> str | None:
        for name in body:
            if name != FINGERPRINT_FIELD:
                raise BadRequest(str(name)[:64], f"unknown field; only {FINGERPRINT_FIELD}")
        return body.get(FINGERPRINT_FIELD)

    def register_host(self, request: webob.Request, host: str) -> webob.Response:
        fingerprint = self._fingerprint(self._optional_object(request))
        registration = self.access.registry.add(host, fingerprint)
        LOG.info("host %s registered by %s", host, request.environ[PRINCIPAL].label)
        return json_response(201, registration.to_json())

    def approve_host(self, request: webob.Request, host: str) -> webob.Response:
        fingerprint = self._fingerprint(self._optional_object(request))
        registration, revoked = self.access.registry.approve(host, fingerprint)
        LOG.info("host %s approved by %s (EK %s%s)", host, request.environ[PRINCIPAL].label,
                 (registration.ek_cert_fingerprint or "")[:16],
                 "; the AK of the previous TPM is revoked" if revoked else "")
        return json_response(200, {**registration.to_json(), "revoked_ak": revoked})

    def remove_host(self, request: webob.Request, host: str) -> webob.Response:
        self.access.registry.remove(host)
        LOG.info("host %s removed by %s", host, request.environ[PRINCIPAL].label)
        return webob.Response(status=204)

    def create_token(self, request: webob.Request) -> webob.Response:
        body = self._json_object(request)
        for name in body:
            if name not in ("role", "host", "description"):
                raise BadRequest(str(name)[:64], "unknown field; use role, host, description")
        record, token = new_token(self.access.store, body.get("role"),
                                  body.get("host"), body.get("description"))
        LOG.info("API token %s (role %s) created by %s", record.id, record.role,
                 request.environ[PRINCIPAL].label)
        return json_response(201, {"id": record.id, "role": record.role, "host": record.host,
                                   "token": token})

    def _host_status(self) -> HostStatusService:
        if self.host_status is None:
            raise NotFound("host_status", "this TTP does not attest hosts continuously")
        return self.host_status

    def list_hosts(self, request: webob.Request) -> webob.Response:
        if "status" not in request.GET:
            return json_response(200, {"hosts": [
                r.to_json() for r in self.access.registry.list()]})
        if request.GET.get("status") not in ("1", "true"):
            raise BadRequest("status", "use GET /v1/hosts?status=1 (current host status) or "
                                       "GET /v1/hosts (registrations)")
        return json_response(200, self._host_status().statuses())

    def host_challenge(self, request: webob.Request, host: str) -> webob.Response:
        return json_response(201, self._host_status().challenge(host))

    def host_attest(self, request: webob.Request, host: str) -> webob.Response:
        return json_response(200, metrics.observe_attestation(
            "host", lambda: self._host_status().attest(host, self._json_body(request)),
            metrics.host_outcome))

    def list_profiles(self, request: webob.Request) -> webob.Response:
        return json_response(200, {"profiles": self.profiles.summaries()})

    def get_profile(self, request: webob.Request, name: str) -> webob.Response:
        return json_response(200, self.profiles.get(name))

    def put_profile(self, request: webob.Request, name: str) -> webob.Response:
        ctype = request.content_type or "application/json"
        if ctype not in ("application/json", "application/yaml", "application/x-yaml",
                         "text/yaml"):
            raise UnsupportedMediaType("content_type", "send application/json or "
                                                       "application/yaml")
        data = read_body(request, self.limits)
        if ctype == "application/json":
            document: object = parse_json(data, self.limits)
        else:
            document = data
        created, stored = self.profiles.put(name, document)
        return json_response(201 if created else 200, stored)

    def delete_profile(self, request: webob.Request, name: str) -> webob.Response:
        self.profiles.delete(name)
        return webob.Response(status=204)

    def attest(self, request: webob.Request) -> webob.Response:
        body = self._json_body(request)
        principal: Principal = request.environ[PRINCIPAL]
        if principal.host is not None and isinstance(body, dict) \
                and body.get("host") != principal.host:
            raise Forbidden("host_mismatch", f"credentials of host {principal.host!r} cannot "
                                             "attest for another host")
        status, body = metrics.observe_attestation(
            "launch", lambda: self.attestations.attest(body, self._requester(request)),
            metrics.launch_outcome)
        return json_response(status, body)

    def get_attestation(self, request: webob.Request, name: str) -> webob.Response:
        if not _UUID.match(name):
            raise NotFound("attestation", "attestation ids are lowercase UUIDs")
        record = self.db.get_attestation(name)
        if record is None:
            raise NotFound("attestation", f"no attestation {name}")
        return json_response(200, record.to_dict())

    def get_receipts(self, request: webob.Request, name: str) -> webob.Response:
        if self.receipts is None:
            raise NotFound("receipt", "this TTP issues no receipts")
        receipts = self.receipts.lookup(name, request.headers.get(PROOF_HEADER))
        return json_response(200, {"token_digest": name, "receipts": receipts})

    def metrics_endpoint(self, request: webob.Request) -> webob.Response:
        """Prometheus text exposition: counters of every worker, fleet figures from the DB."""
        response = webob.Response(status=200, body=metrics.exposition(self.db))
        response.headers["Content-Type"] = metrics.CONTENT_TYPE
        response.headers["Cache-Control"] = "no-store"
        return response
