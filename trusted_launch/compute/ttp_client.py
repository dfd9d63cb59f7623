"""HTTPS client for the TTP's /v1 API, through a keystoneauth1 session."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from keystoneauth1 import exceptions as ks_exc
from keystoneauth1 import session as ks_session

from trusted_launch.compute.errors import (
    AttestationRefused,
    TTPNotAllowed,
    TTPProtocolError,
    TTPUnreachable,
)

LOG = logging.getLogger(__name__)


def b64(data: bytes) -> str:
    """Standard base64 text, the encoding of every binary field in /v1 bodies."""
    return base64.b64encode(data).decode("ascii")


def check_ttp_url(url: str, allowed: Sequence[str]) -> str:
    """Return ``url`` normalised if it is on the allow-list, else refuse."""
    normalised = url.rstrip("/")
    if normalised not in {a.rstrip("/") for a in allowed}:
        raise TTPNotAllowed(f"TTP URL {url!r} is not in [trusted_launch] allowed_ttp_urls")
    if not normalised.startswith("https://"):
        raise TTPNotAllowed(f"TTP URL {url!r} is not an https:// URL")
    return normalised


class TTPClient:
    """Calls one TTP; every failure becomes a :class:`LaunchRefused` subclass."""

    def __init__(self, base_url: str, *, ca_file: str | None = None, timeout: float = 10.0,
                 connect_retries: int = 2, session: ks_session.Session | None = None,
                 auth_token: str | None = None) -> None:
        """``auth_token``: this host's TTP API token (role host), sent as X-Auth-Token."""
        self.base_url = base_url.rstrip("/")
        self._headers = {"X-Auth-Token": auth_token} if auth_token else {}
        self._timeout = timeout
        self._retries = connect_retries
        self._session = session or ks_session.Session(
            verify=ca_file if ca_file else True, timeout=timeout)

    def attest(self, body: Mapping[str, Any]) -> dict:
        """POST /v1/attestations; the parsed 200 answer, or a refusal."""
        return self._post("/v1/attestations", body)

    def enroll(self, body: Mapping[str, Any]) -> dict:
        """POST /v1/hosts: the MakeCredential challenge for this host."""
        return self._post("/v1/hosts", body)

    def activate(self, host: str, body: Mapping[str, Any]) -> dict:
        """POST /v1/hosts/{host}/activation: the AK certificate."""
        return self._post(f"/v1/hosts/{host}/activation", body)

    def host_challenge(self, host: str) -> dict:
        """POST /v1/hosts/{host}/challenges: a fresh, single-use quote nonce."""
        return self._post(f"/v1/hosts/{host}/challenges", {})

    def host_attestation(self, host: str, body: Mapping[str, Any]) -> dict:
        """POST /v1/hosts/{host}/attestations: a periodic quote; this host's status."""
        return self._post(f"/v1/hosts/{host}/attestations", body)

    def _post(self, path: str, body: Mapping[str, Any]) -> dict:
        url = self.base_url + path
        try:
            response = self._session.post(
                url, json=dict(body), headers=self._headers, raise_exc=False,
                connect_retries=self._retries,
                timeout=self._timeout, log=False)
        except ks_exc.SSLError as exc:
            raise TTPUnreachable(f"TLS verification of {self.base_url} failed: {exc}") from None
        except (ks_exc.ConnectionError, ks_exc.ConnectTimeout, ks_exc.RequestTimeout) as exc:
            raise TTPUnreachable(f"{self.base_url} did not answer: {type(exc).__name__}") from None
        answer = _json_or_refuse(response)
        if response.status_code in (200, 201):
            return answer
        error = answer.get("error") if isinstance(answer.get("error"), dict) else {}
        check = str(error.get("check") or error.get("code") or f"http_{response.status_code}")
        reason = str(error.get("reason") or response.reason or "no reason given")
        if response.status_code >= 500:
            raise TTPUnreachable(f"{self.base_url} failed with HTTP "
                                 f"{response.status_code}: {reason}")
        raise AttestationRefused(check, reason)


def _json_or_refuse(response) -> dict:
    try:
        answer = response.json()
    except (ValueError, json.JSONDecodeError):
        raise TTPProtocolError(
            f"TTP answered HTTP {response.status_code} with a body that is not JSON") from None
    if not isinstance(answer, dict):
        raise TTPProtocolError("TTP answered with JSON that is not an object")
    return answer
