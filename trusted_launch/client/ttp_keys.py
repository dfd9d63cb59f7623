"""Fetch the TTP's current token-encryption key over verified HTTPS."""

from __future__ import annotations

import difflib
import json
import os
import re
import time

import requests
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from trusted_launch.client.errors import TTPKeyError, UnknownProfileName
from trusted_launch.crypto._encoding import b64url_decode
from trusted_launch.crypto.token import HPKE_ALGORITHM

MAX_RESPONSE_BYTES = 64 * 1024
_KEY_ID_RE = re.compile(r"[0-9a-f]{16}")


def fetch_ttp_key(ttp_url: str, *, ca_file: str | None = None, timeout: float = 10,
                  profile: str | None = None) -> tuple[str, X25519PublicKey]:
    """``(key_id, public_key)`` of the first (current) key at ``{ttp_url}/v1/keys``.

    TLS is always verified: against ``ca_file`` if given, else the system CAs.
    With ``profile``, :class:`UnknownProfileName` unless the TTP publishes a
    profile of that name (a TTP that publishes no ``profiles`` list is not asked).
    """
    document = _get_keys_document(ttp_url, ca_file, timeout)
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list) or not keys or not isinstance(keys[0], dict):
        raise TTPKeyError(f"{ttp_url}/v1/keys lists no keys")
    if profile is not None:
        check_published_profile(ttp_url, document.get("profiles"), profile)
    return _parse_key(keys[0], now=time.time())


def check_published_profile(ttp_url: str, published: object, profile: str) -> None:
    """Refuse ``profile`` unless it is in the TTP's published ``profiles`` list."""
    if published is None:
        return
    if not isinstance(published, list) or not all(isinstance(p, str) for p in published):
        raise TTPKeyError(f"{ttp_url}/v1/keys: 'profiles' is not a list of names")
    if not published:
        raise UnknownProfileName(f"the TTP at {ttp_url} has no security profiles yet: its "
                                 "operator adds them with 'trusted-launch-ttp-manage "
                                 "profile set'")
    if profile not in published:
        close = difflib.get_close_matches(profile, published, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UnknownProfileName(f"security profile {profile!r} is not one the TTP at "
                                 f"{ttp_url} offers: {hint}known profiles: "
                                 f"{', '.join(published)}")


def _get_keys_document(ttp_url: str, ca_file: str | None, timeout: float) -> object:
    if not ttp_url.lower().startswith("https://"):
        raise TTPKeyError(f"TTP URL {ttp_url!r} must use https://")
    if ca_file and not os.path.isfile(ca_file):
        raise TTPKeyError(f"CA file {ca_file} does not exist")
    url = ttp_url.rstrip("/") + "/v1/keys"
    try:
        response = requests.get(url, verify=ca_file if ca_file else True, timeout=timeout,
                                headers={"Accept": "application/json"}, allow_redirects=False,
                                stream=True)
        with response:
            content = response.raw.read(MAX_RESPONSE_BYTES + 1, decode_content=True)
    except requests.exceptions.SSLError as exc:
        raise TTPKeyError(f"TLS verification of {url} failed: {_short(exc)}") from None
    except requests.exceptions.RequestException as exc:
        raise TTPKeyError(f"cannot reach {url}: {_short(exc)}") from None
    if response.status_code != 200:
        raise TTPKeyError(f"{url} answered HTTP {response.status_code}")
    if len(content) > MAX_RESPONSE_BYTES:
        raise TTPKeyError(f"{url} answered more than {MAX_RESPONSE_BYTES} bytes")
    try:
        return json.loads(content)
    except ValueError:
        raise TTPKeyError(f"{url} did not answer JSON") from None


def _parse_key(entry: dict, *, now: float) -> tuple[str, X25519PublicKey]:
    key_id = entry.get("id")
    if not isinstance(key_id, str) or not key_id:
        raise TTPKeyError("TTP key entry has no 'id'")
    if not _KEY_ID_RE.fullmatch(key_id):
        raise TTPKeyError(f"TTP key id {key_id!r} is not 16 lower-case hex characters")
    if entry.get("algorithm") != HPKE_ALGORITHM:
        raise TTPKeyError(
            f"TTP key {key_id} uses algorithm {entry.get('algorithm')!r}, not {HPKE_ALGORITHM}")
    not_after = entry.get("not_after")
    if not_after is not None and (not isinstance(not_after, int | float) or not_after <= now):
        raise TTPKeyError(f"TTP key {key_id} is past its not_after time {not_after!r}")
    try:
        raw = b64url_decode(entry.get("public_key", ""))
    except ValueError as exc:
        raise TTPKeyError(f"TTP key {key_id}: public_key is not base64url ({exc})") from None
    if len(raw) != 32:
        raise TTPKeyError(f"TTP key {key_id}: public_key is {len(raw)} bytes, expected 32")
    return key_id, X25519PublicKey.from_public_bytes(raw)


def _short(exc: Exception) -> str:
    text = str(exc)
    for marker in ("CERTIFICATE_VERIFY_FAILED", "hostname mismatch", "Connection refused"):
        if marker in text:
            return marker.lower().replace("_", " ")
    return text[:200]
