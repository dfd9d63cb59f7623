"""Parsing and validation of the ``POST /v1/attestations`` request body.

Every field is type-checked, size-bounded and strictly decoded before any
cryptography runs; a bad field raises :class:`RequestInvalid` whose
``check`` is the field name (the API answers 400 with it).
"""

from __future__ import annotations

import binascii
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from trusted_launch.evidence.errors import EvidenceError
from trusted_launch.evidence.tpm2 import PCRSelection
from trusted_launch.ttp.errors import BadRequest, unknown_field_check

MAX_EVENT_LOG = 4 * 1024 * 1024
MAX_TPM_STRUCTURE = 4096
MAX_TOKEN = 4096
MAX_CERTIFICATE = 16 * 1024
MAX_SELECTION = 256
_HOST_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,254}")
_LAUNCH_ID_RE = re.compile(r"[\x21-\x7e]{1,255}")
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]+")
_PEM_BEGIN = "-----BEGIN CERTIFICATE-----"

FIELDS = ("host", "launch_id", "token", "ak_certificate", "bind_key_public", "certify_info",
          "certify_signature", "event_log", "bind_key_pcrs")


class RequestInvalid(BadRequest):
    """A malformed attestation request; ``check`` names the field."""


@dataclass(frozen=True)
class AttestationRequest:
    """The validated body of ``POST /v1/attestations`` (binary fields decoded)."""

    host: str
    launch_id: str
    token: str = field(repr=False)
    ak_certificate_pem: bytes = field(repr=False)
    bind_key_public: bytes = field(repr=False)
    certify_info: bytes = field(repr=False)
    certify_signature: bytes = field(repr=False)
    event_log: bytes = field(repr=False)
    bind_key_pcrs: PCRSelection

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> AttestationRequest:
        """Validate a decoded JSON body; raise :class:`RequestInvalid` on any flaw."""
        if not isinstance(body, Mapping):
            raise RequestInvalid("body", "the request body must be a JSON object")
        for name in body:
            if name not in FIELDS:
                raise RequestInvalid(*unknown_field_check(name))
        return cls(
            host=_text(body, "host", _HOST_RE, 255, "a host name ([A-Za-z0-9._-])"),
            launch_id=_text(body, "launch_id", _LAUNCH_ID_RE, 255,
                            "1-255 printable ASCII characters without spaces"),
            token=_text(body, "token", _TOKEN_RE, MAX_TOKEN, "base64url text"),
            ak_certificate_pem=_pem(body),
            bind_key_public=_base64(body, "bind_key_public", MAX_TPM_STRUCTURE),
            certify_info=_base64(body, "certify_info", MAX_TPM_STRUCTURE),
            certify_signature=_base64(body, "certify_signature", MAX_TPM_STRUCTURE),
            event_log=_base64(body, "event_log", MAX_EVENT_LOG),
            bind_key_pcrs=_selection(body),
        )


def _field(body: Mapping[str, Any], name: str) -> str:
    if name not in body:
        raise RequestInvalid(name, "required field is missing")
    value = body[name]
    if not isinstance(value, str):
        raise RequestInvalid(name, f"must be a string, got {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _text(body: Mapping[str, Any], name: str, pattern: re.Pattern, limit: int,
          expected: str) -> str:
    value = _field(body, name)
    if len(value) > limit:
        raise RequestInvalid(name, f"longer than {limit} characters")
    if not pattern.fullmatch(value):
        raise RequestInvalid(name, f"must be {expected}")
    return value


def _pem(body: Mapping[str, Any]) -> bytes:
    value = _field(body, "ak_certificate")
    if len(value) > MAX_CERTIFICATE:
        raise RequestInvalid("ak_certificate", f"longer than {MAX_CERTIFICATE} characters")
    if not value.isascii() or _PEM_BEGIN not in value:
        raise RequestInvalid("ak_certificate", "must be a PEM certificate")
    return value.encode("ascii")


def _base64(body: Mapping[str, Any], name: str, limit: int) -> bytes:
    value = _field(body, name)
    if len(value) > 4 * ((limit + 2) // 3):
        raise RequestInvalid(name, f"decodes to more than {limit} bytes")
    try:
        data = binascii.a2b_base64(value, strict_mode=True)
    except (binascii.Error, ValueError):
        raise RequestInvalid(name, "is not strict standard base64") from None
    if not data:
        raise RequestInvalid(name, "is empty")
    if not _canonical(value, data):
        raise RequestInvalid(name, "is not canonical base64")
    return data


def _canonical(text: str, data: bytes) -> bool:
    """Whether ``text`` is exactly ``base64(data)``, for strictly decoded, non-empty ``data``.

    Strict decoding admits only the alphabet with correct padding at the end,
    and every whole 4-character group maps to one 3-byte group both ways; only
    the length and the last group (unused bits that must be zero) can differ,
    so re-encoding the last group is enough (the event log is large).
    """
    tail = data[-((len(data) - 1) % 3 + 1):]
    return (len(text) == 4 * ((len(data) + 2) // 3)
            and binascii.b2a_base64(tail, newline=False) == text[-4:].encode("ascii"))


def _selection(body: Mapping[str, Any]) -> PCRSelection:
    value = _field(body, "bind_key_pcrs")
    if len(value) > MAX_SELECTION:
        raise RequestInvalid("bind_key_pcrs", f"longer than {MAX_SELECTION} characters")
    try:
        selection = _parse_selection(value)
    except EvidenceError as exc:
        raise RequestInvalid("bind_key_pcrs", f"not a PCR selection like "
                                              f"'sha256:0,1,2': {exc}") from None
    if not len(selection):
        raise RequestInvalid("bind_key_pcrs", "selects no PCR")
    return selection


@functools.lru_cache(maxsize=64)
def _parse_selection(spec: str) -> PCRSelection:
    """``PCRSelection.from_spec``, kept per spec: hosts send the same few (it is immutable)."""
    return PCRSelection.from_spec(spec)
