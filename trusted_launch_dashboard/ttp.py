"""The dashboard's calls to the TTP: public routes, reader routes, the receipt proxy.

Settings (Django, in Horizon's local_settings): ``TRUSTED_LAUNCH = {"ttp_url":
..., "ca_file": ..., "auth": "token_file" | "keystone", "token_file": ...,
"timeout": 10, "host_status_max_age": 300}``. With ``auth = "token_file"`` the
reader routes send the TTP API token read from ``token_file`` (role reader);
with ``auth = "keystone"`` they send the signed-in user's Keystone token (the
TTP then runs with ``[api] auth_strategy = keystone``). A token is only ever
put in the ``X-Auth-Token`` header: never in a page, an error or a log line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import requests

DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MAX_AGE_S = 300.0
PROOF_HEADER = "X-Receipt-Proof"
_PROOF_RE = re.compile(r"[A-Za-z0-9_-]{43}")  # base64url of 32 bytes, unpadded
_DIGEST_RE = re.compile(r"[0-9a-f]{64}")
AUTH_MODES = ("token_file", "keystone")


class TTPError(Exception):
    """A TTP call failed; the message names the route and the reason, never a credential."""


@dataclass(frozen=True)
class TTPSettings:
    """The validated ``TRUSTED_LAUNCH`` setting."""

    ttp_url: str
    ca_file: str | None
    auth: str
    token_file: str | None
    timeout: float
    max_age: float

    @classmethod
    def from_mapping(cls, setting: Mapping | None) -> TTPSettings:
        if not setting or not setting.get("ttp_url"):
            raise TTPError("TRUSTED_LAUNCH['ttp_url'] is not set in local_settings")
        url = str(setting["ttp_url"]).rstrip("/")
        if not url.startswith("https://"):
            raise TTPError(f"TRUSTED_LAUNCH['ttp_url'] must be an https URL, not {url!r}")
        auth = str(setting.get("auth") or "token_file")
        if auth not in AUTH_MODES:
            raise TTPError(f"TRUSTED_LAUNCH['auth'] must be one of {', '.join(AUTH_MODES)}")
        if auth == "token_file" and not setting.get("token_file"):
            raise TTPError("TRUSTED_LAUNCH['token_file'] is needed with auth = token_file")
        return cls(ttp_url=url, ca_file=setting.get("ca_file"), auth=auth,
                   token_file=setting.get("token_file"),
                   timeout=float(setting.get("timeout") or DEFAULT_TIMEOUT_S),
                   max_age=float(setting.get("host_status_max_age") or DEFAULT_MAX_AGE_S))


def check_proof(proof: object) -> str:
    """The receipt proof if it has the form base64url(32 bytes); TTPError otherwise."""
    if not isinstance(proof, str) or not _PROOF_RE.fullmatch(proof):
        raise TTPError("the receipt proof must be 43 base64url characters "
                       "(HKDF-SHA256 of N, computed in the browser)")
    return proof


class TTPClient:
    """Calls to one configured TTP (never to a URL a tenant supplied)."""

    def __init__(self, settings: TTPSettings, keystone_token: str | None = None) -> None:
        self.settings = settings
        self._keystone_token = keystone_token

    def _reader_token(self) -> str:
        if self.settings.auth == "keystone":
            if not self._keystone_token:
                raise TTPError("no Keystone token in the session for the TTP's reader routes")
            return self._keystone_token
        try:
            with open(self.settings.token_file or "", encoding="ascii") as handle:
                token = handle.read().strip()
        except OSError as exc:
            raise TTPError(f"cannot read the TTP token file {self.settings.token_file}: "
                           f"{exc.strerror}") from None
        if not token:
            raise TTPError(f"the TTP token file {self.settings.token_file} is empty")
        return token

    def _get(self, path: str, headers: Mapping[str, str] | None = None) -> dict:
        url = self.settings.ttp_url + path
        try:
            response = requests.get(url, headers=dict(headers or {}),
                                    timeout=self.settings.timeout,
                                    verify=self.settings.ca_file or True)
        except requests.RequestException as exc:
            raise TTPError(f"GET {path}: the TTP did not answer ({type(exc).__name__})"
                           ) from None
        if response.status_code != 200:
            raise TTPError(f"GET {path}: {response.status_code} {_error_code(response)}")
        try:
            return response.json()
        except ValueError:
            raise TTPError(f"GET {path}: the answer is not JSON") from None

    # Public routes -------------------------------------------------------------------
    def profiles(self) -> list[dict]:
        """Name, level and description of each profile, weakest first."""
        return list(self._get("/v1/profiles").get("profiles") or [])

    def profile_levels(self) -> dict[str, int]:
        return {str(p["name"]): int(p["level"]) for p in self.profiles()}

    def receipt_keys(self) -> list[dict]:
        """The TTP's published receipt public keys (id, algorithm, PEM)."""
        return list(self._get("/v1/keys").get("receipt_keys") or [])

    def receipts(self, token_digest: str, proof: str) -> list[dict]:
        """Every receipt about a token; the proof comes from the tenant's browser."""
        if not _DIGEST_RE.fullmatch(token_digest):
            raise TTPError("a token digest is 64 lower-case hex characters")
        answer = self._get(f"/v1/receipts/{token_digest}",
                           {PROOF_HEADER: check_proof(proof)})
        return list(answer.get("receipts") or [])

    # Reader routes -------------------------------------------------------------------
    def host_statuses(self) -> tuple[list[dict], float]:
        """``GET /v1/hosts?status=1``: every host's current status and the TTP's clock."""
        answer = self._get("/v1/hosts?status=1", {"X-Auth-Token": self._reader_token()})
        return list(answer.get("hosts") or []), float(answer.get("now") or 0.0)


def _error_code(response: requests.Response) -> str:
    """The TTP's error code (its JSON error body), or the reason phrase."""
    try:
        error = response.json().get("error") or {}
    except (ValueError, AttributeError):
        return response.reason or ""
    if isinstance(error, Mapping):
        return str(error.get("code") or response.reason or "")
    return response.reason or ""
