"""The TTP's REST API (/v1) as a WSGI application.

JSON in and out; every error is ``{"error": {"code", "check", "reason"}}``
with a 4xx status (503 when the database is unavailable). Bodies over the
configured limit are refused with 413 before they are read.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Callable
from dataclasses import dataclass

import webob
from oslo_log import log as logging

from trusted_launch.ttp import metrics
from trusted_launch.ttp.db.api import DatabaseError, TTPDatabase
from trusted_launch.ttp.enrollment import Enrollment, check_host_name
from trusted_launch.ttp.errors import (
    APIError,
    BadRequest,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    Unauthorized,
    UnsupportedMediaType,
)
from trusted_launch.ttp.host_status import HostStatusService
from trusted_launch.ttp.keystore import KeyStoreError, TokenKeyStore
from trusted_launch.ttp.openapi import openapi_document
from trusted_launch.ttp.profiles import ProfileStore
from trusted_launch.ttp.receipts import PROOF_HEADER, ReceiptIssuer
from trusted_launch.ttp.service import AttestationService

LOG = logging.getLogger(__name__)
VERSION = "v1"
_NAME = r"(?P<name>[^/]{1,255})"
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


class TTPApplication:
    """Routes /v1 requests to the enrollment, profile and attestation handlers."""

    def __init__(self, *, db: TTPDatabase, token_keys: TokenKeyStore, enrollment: Enrollment,
                 profiles: ProfileStore, attestations: AttestationService,
                 admin_token_hash: str | None, limits: Limits,
                 receipts: ReceiptIssuer | None = None,
                 host_status: HostStatusService | None = None) -> None:
        self.db, self.token_keys, self.enrollment = db, token_keys, enrollment
        self.profiles, self.attestations, self.receipts = profiles, attestations, receipts
        self.host_status = host_status
        self.admin_token_hash = (admin_token_hash or "").lower() or None
        self.limits = limits
        self.routes: list[tuple[re.Pattern, dict[str, Callable]]] = [
            (re.compile(r"^/?$"), {"GET": self.versions}),
            (re.compile(r"^/v1/?$"), {"GET": self.version}),
            (re.compile(r"^/v1/openapi\.json$"), {"GET": self.openapi}),
            (re.compile(r"^/v1/keys$"), {"GET": self.keys}),
            (re.compile(r"^/v1/hosts$"), {"POST": self.enroll, "GET": self.list_hosts}),
            (re.compile(rf"^/v1/hosts/{_NAME}$"), {"GET": self.get_host}),
            (re.compile(rf"^/v1/hosts/{_NAME}/activation$"), {"POST": self.activate}),
            (re.compile(rf"^/v1/hosts/{_NAME}/challenges$"), {"POST": self.host_challenge}),
            (re.compile(rf"^/v1/hosts/{_NAME}/attestations$"), {"POST": self.host_attest}),
            (re.compile(r"^/v1/profiles$"), {"GET": self.list_profiles}),
            (re.compile(rf"^/v1/profiles/{_NAME}$"), {
                "GET": self.get_profile, "PUT": self.put_profile,
                "DELETE": self.delete_profile}),
            (re.compile(r"^/v1/attestations$"), {"POST": self.attest}),
            (re.compile(rf"^/v1/attestations/{_NAME}$"), {"GET": self.get_attestation}),
            (re.compile(rf"^/v1/receipts/{_NAME}$"), {"GET": self.get_receipts}),
            (re.compile(r"^/metrics$"), {"GET": self.metrics_endpoint}),
        ]

    def __call__(self, environ: dict, start_response: Callable) -> object:
        request = webob.Request(environ)
        try:
            response = self.dispatch(request)
        except APIError as exc:
            response = json_response(exc.status, exc.body())
            response.headers.update(exc.headers)
        except (DatabaseError, KeyStoreError) as exc:
            LOG.error("%s %r: %s", request.method, environ.get("PATH_INFO", "")[:200], exc)
            error = ServiceUnavailable("service", "a backing store is unavailable")
            response = json_response(error.status, error.body())
        except Exception:
            LOG.exception("%s %r failed", request.method, environ.get("PATH_INFO", "")[:200])
            response = json_response(500, {"error": {
                "code": "internal_error", "check": "internal", "reason": "internal error"}})
        return response(environ, start_response)

    def dispatch(self, request: webob.Request) -> webob.Response:
        """Find the handler for the request's path and method, or 404/405."""
        try:
            path = request.path_info
        except UnicodeDecodeError:
            raise BadRequest("path", "the path is not UTF-8 once percent-decoded") from None
        for pattern, methods in self.routes:
            match = pattern.match(path)
            if match is None:
                continue
            handler = methods.get(request.method)
            if handler is None:
                allowed = ", ".join(sorted(methods))
                raise MethodNotAllowed("method", f"{request.method[:16]} is not allowed here; "
                                                 f"use {allowed}", headers={"Allow": allowed})
            return handler(request, **match.groupdict())
        raise NotFound("path", f"no resource at {path[:100]!r}")

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

    def _require_admin(self, request: webob.Request) -> None:
        if self.admin_token_hash is None:
            raise Unauthorized("admin_token", "profile management over the API is disabled")
        presented = request.headers.get("X-Auth-Token", "")
        digest = hashlib.sha256(presented.encode("utf-8", "replace")).hexdigest()
        if not presented or not hmac.compare_digest(digest, self.admin_token_hash):
            raise Unauthorized("admin_token", "missing or wrong X-Auth-Token")

    @staticmethod
    def _requester(request: webob.Request) -> str:
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

    def activate(self, request: webob.Request, name: str) -> webob.Response:
        pem = self.enrollment.activate(name, self._json_object(request))
        return json_response(200, {"ak_certificate": pem})

    def get_host(self, request: webob.Request, name: str) -> webob.Response:
        check_host_name(name)
        host = self.db.get_host(name)
        if host is None:
            raise NotFound("host", f"host {name!r} is not enrolled")
        return json_response(200, {
            "host": host.name, "state": host.state,
            "ek_certificate_sha256": host.ek_cert_fingerprint, "ak_name": host.ak_name,
            "activated_at": host.activated_at.isoformat() + "Z" if host.activated_at else None,
            "last_attested_at": None if self.host_status is None
            else self.host_status.last_attested_at(name)})

    def _host_status(self) -> HostStatusService:
        if self.host_status is None:
            raise NotFound("host_status", "this TTP does not attest hosts continuously")
        return self.host_status

    def list_hosts(self, request: webob.Request) -> webob.Response:
        if request.GET.get("status") not in ("1", "true"):
            raise BadRequest("status", "only GET /v1/hosts?status=1 (current host status) "
                                       "is supported")
        return json_response(200, self._host_status().statuses())

    def host_challenge(self, request: webob.Request, name: str) -> webob.Response:
        return json_response(201, self._host_status().challenge(name))

    def host_attest(self, request: webob.Request, name: str) -> webob.Response:
        return json_response(200, metrics.observe_attestation(
            "host", lambda: self._host_status().attest(name, self._json_body(request)),
            metrics.host_outcome))

    def list_profiles(self, request: webob.Request) -> webob.Response:
        return json_response(200, {"profiles": self.profiles.summaries()})

    def get_profile(self, request: webob.Request, name: str) -> webob.Response:
        return json_response(200, self.profiles.get(name))

    def put_profile(self, request: webob.Request, name: str) -> webob.Response:
        self._require_admin(request)
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
        self._require_admin(request)
        self.profiles.delete(name)
        return webob.Response(status=204)

    def attest(self, request: webob.Request) -> webob.Response:
        status, body = metrics.observe_attestation(
            "launch", lambda: self.attestations.attest(self._json_body(request),
                                                       self._requester(request)),
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
