"""Errors the TTP answers with: each maps to one JSON error body and HTTP status."""

from __future__ import annotations

import re


class APIError(Exception):
    """An error answer: ``{"error": {"code", "check", "reason"}}`` with ``status``."""

    status = 400
    code = "bad_request"

    def __init__(self, check: str, reason: str, *, extra: dict | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{check}: {reason}")
        self.check = check
        self.reason = reason
        self.extra = extra or {}
        self.headers = headers or {}

    def body(self) -> dict:
        """The JSON body of the answer."""
        return {"error": {"code": self.code, "check": self.check, "reason": self.reason},
                **self.extra}


class BadRequest(APIError):
    """The request is malformed (400)."""


class Unauthorized(APIError):
    """No credentials where the route needs them, or credentials that are not valid (401)."""

    status, code = 401, "unauthorized"

    def __init__(self, check: str, reason: str, **kwargs) -> None:
        headers = {"WWW-Authenticate": 'X-Auth-Token realm="trusted-launch-ttp"',
                   **kwargs.pop("headers", {})}
        super().__init__(check, reason, headers=headers, **kwargs)


class Forbidden(APIError):
    """Authenticated, but the policy does not allow this caller to do this (403)."""

    status, code = 403, "forbidden"


class NotFound(APIError):
    """No such resource (404)."""

    status, code = 404, "not_found"


class MethodNotAllowed(APIError):
    """The resource exists but not with this method (405)."""

    status, code = 405, "method_not_allowed"


class Refused(APIError):
    """A security check refused the request (403)."""

    status, code = 403, "attestation_refused"


class EnrollmentRefused(Refused):
    """A host enrollment check failed (403)."""

    code = "enrollment_refused"


class RequestTimeout(APIError):
    """The client did not send its request within the server's deadline (408)."""

    status, code = 408, "request_timeout"


class Conflict(APIError):
    """The request conflicts with the stored state (409)."""

    status, code = 409, "conflict"


class TooManyRequests(APIError):
    """The caller made too many failed attempts; retry later (429)."""

    status, code = 429, "too_many_requests"


class PayloadTooLarge(APIError):
    """The body exceeds the configured limit (413)."""

    status, code = 413, "payload_too_large"


class UnsupportedMediaType(APIError):
    """The body is not in a supported format (415)."""

    status, code = 415, "unsupported_media_type"


class HeadersTooLarge(APIError):
    """The request line and headers exceed the server's limit (431)."""

    status, code = 431, "request_header_fields_too_large"


class ServiceUnavailable(APIError):
    """A dependency (the database, the key store) is unavailable (503)."""

    status, code = 503, "service_unavailable"


_FIELD_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def unknown_field_check(name: object) -> tuple[str, str]:
    """(check, reason) refusing an unknown field; the check stays machine-readable."""
    text = str(name)
    return (text if _FIELD_NAME.fullmatch(text) else "body",
            f"unknown field {text[:64]!r}")
