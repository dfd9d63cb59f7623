"""Clients of the TTP's host-facing API: one interface, two transports.

:class:`BaseTTPClient` is what the host side (launch, enrollment, periodic
attestation) calls; :class:`TTPClient` carries the requests over HTTPS to the
/v1 API through a keystoneauth1 session, :class:`~.ttp_rpc_client.RPCTTPClient`
over oslo.messaging RPC. Both hand back the same /v1 JSON bodies and turn
every failure into the same :class:`LaunchRefused` subclasses;
:func:`make_ttp_client` picks one by ``[trusted_launch] ttp_transport``.
"""

from __future__ import annotations

import abc
import base64
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from keystoneauth1 import exceptions as ks_exc
from keystoneauth1 import session as ks_session

from trusted_launch.compute.errors import (
    AttestationRefused,
    TTPNotAllowed,
    TTPProtocolError,
    TTPUnreachable,
)
from trusted_launch.crypto.api_token import read_api_token

LOG = logging.getLogger(__name__)

#: The host-facing operations and their /v1 routes ({host}: the enrolled host name).
ROUTES = {
    "attest": "/v1/attestations",
    "enroll": "/v1/hosts",
    "activate": "/v1/hosts/{host}/activation",
    "host_challenge": "/v1/hosts/{host}/challenges",
    "host_attestation": "/v1/hosts/{host}/attestations",
}


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


def answer_or_refuse(ttp: str, status: int, answer: object, reason: str | None) -> dict:
    """The TTP's JSON object if ``status`` is a success; else the refusal it names.

    4xx: :class:`AttestationRefused` with the TTP's check; 5xx: TTPUnreachable.
    """
    if not isinstance(answer, dict):
        raise TTPProtocolError("TTP answered with JSON that is not an object")
    if status in (200, 201):
        return answer
    error = answer.get("error") if isinstance(answer.get("error"), dict) else {}
    check = str(error.get("check") or error.get("code") or f"http_{status}")
    reason = str(error.get("reason") or reason or "no reason given")
    if status >= 500:
        raise TTPUnreachable(f"{ttp} failed with HTTP {status}: {reason}")
    raise AttestationRefused(check, reason)


class BaseTTPClient(abc.ABC):
    """Calls one TTP, named by its allowed base URL; every failure is a LaunchRefused."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")

    def attest(self, body: Mapping[str, Any]) -> dict:
        """POST /v1/attestations; the parsed 200 answer, or a refusal."""
        return self._call("attest", body=body)

    def enroll(self, body: Mapping[str, Any]) -> dict:
        """POST /v1/hosts: the MakeCredential challenge for this host."""
        return self._call("enroll", body=body)

    def activate(self, host: str, body: Mapping[str, Any]) -> dict:
        """POST /v1/hosts/{host}/activation: the AK certificate."""
        return self._call("activate", host=host, body=body)

    def host_challenge(self, host: str) -> dict:
        """POST /v1/hosts/{host}/challenges: a fresh, single-use quote nonce."""
        return self._call("host_challenge", host=host)

    def host_attestation(self, host: str, body: Mapping[str, Any]) -> dict:
        """POST /v1/hosts/{host}/attestations: a periodic quote; this host's status."""
        return self._call("host_attestation", host=host, body=body)

    @abc.abstractmethod
    def _call(self, operation: str, *, host: str | None = None,
              body: Mapping[str, Any] | None = None) -> dict:
        """Send one request of ``operation`` (a key of :data:`ROUTES`); its answer."""


class TTPClient(BaseTTPClient):
    """The TTP's /v1 API over HTTPS (verified TLS, keystoneauth1 session)."""

    def __init__(self, base_url: str, *, ca_file: str | None = None, timeout: float = 10.0,
                 connect_retries: int = 2, session: ks_session.Session | None = None,
                 auth_token: str | None = None) -> None:
        """``auth_token``: this host's TTP API token (role host), sent as X-Auth-Token."""
        super().__init__(base_url)
        self._headers = {"X-Auth-Token": auth_token} if auth_token else {}
        self._timeout = timeout
        self._retries = connect_retries
        self._session = session or ks_session.Session(
            verify=ca_file if ca_file else True, timeout=timeout)

    def _call(self, operation: str, *, host: str | None = None,
              body: Mapping[str, Any] | None = None) -> dict:
        url = self.base_url + ROUTES[operation].format(host=host)
        try:
            response = self._session.post(
                url, json=dict(body or {}), headers=self._headers, raise_exc=False,
                connect_retries=self._retries,
                timeout=self._timeout, log=False)
        except ks_exc.SSLError as exc:
            raise TTPUnreachable(f"TLS verification of {self.base_url} failed: {exc}") from None
        except (ks_exc.ConnectionError, ks_exc.ConnectTimeout, ks_exc.RequestTimeout) as exc:
            raise TTPUnreachable(f"{self.base_url} did not answer: {type(exc).__name__}") from None
        return answer_or_refuse(self.base_url, response.status_code, _json(response),
                                response.reason)


def _json(response) -> object:
    try:
        return response.json()
    except (ValueError, json.JSONDecodeError):
        raise TTPProtocolError(
            f"TTP answered HTTP {response.status_code} with a body that is not JSON") from None


def make_ttp_client(group, url: str, rpc_transport: Callable[[], object]) -> BaseTTPClient:
    """The client ``[trusted_launch] ttp_transport`` (``group``) selects, for allowed ``url``.

    ``rpc_transport()`` gives the oslo.messaging transport, made once by the caller.
    """
    if group.ttp_transport == "rpc":
        from trusted_launch.compute.ttp_rpc_client import RPCTTPClient
        return RPCTTPClient(url, rpc_transport(), topic=group.ttp_rpc_topic,
                            timeout=group.ttp_timeout, retries=group.ttp_connect_retries)
    token_file = group.ttp_auth_token_file
    return TTPClient(url, ca_file=group.ttp_ca_file, timeout=group.ttp_timeout,
                     connect_retries=group.ttp_connect_retries,
                     auth_token=read_api_token(token_file) if token_file else None)
