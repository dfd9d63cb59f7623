"""Step 1-2: make a launch token for the TTP and keep N on the tenant's side."""

from __future__ import annotations

import os
import pathlib
import secrets
import time

from trusted_launch.client.nonce_store import store_nonce
from trusted_launch.client.ttp_keys import fetch_ttp_key
from trusted_launch.crypto.digest import ImageDigest
from trusted_launch.crypto.token import (
    LaunchToken,
    check_fits_metadata,
    seal_token,
    token_digest,
)


def create_launch_token(ttp_url: str, profile: str, image_digest: ImageDigest, *,
                        ca_file: str | None = None, lifetime_s: int = 3600,
                        nonce_dir: str | os.PathLike | None = None,
                        image_key: bytes | None = None, timeout: float = 10,
                        ) -> tuple[str, pathlib.Path]:
    """Return ``(token, nonce_path)``; N is only ever written to the 0600 nonce file.

    TokenTooLong, before the TTP is contacted, if the token would not fit one
    Nova metadata value; UnknownProfileName if the TTP publishes its profile
    names and ``profile`` is not one of them.
    """
    if lifetime_s <= 0:
        raise ValueError("token lifetime must be positive")
    nonce = secrets.token_bytes(32)
    token = check_fits_metadata(LaunchToken(
        nonce=nonce, profile=profile, image_digest=image_digest,
        expires_at=int(time.time()) + int(lifetime_s), image_key=image_key))
    key_id, public_key = fetch_ttp_key(ttp_url, ca_file=ca_file, timeout=timeout,
                                       profile=profile)
    text = seal_token(token, public_key, key_id)
    path = store_nonce(nonce, token_digest(text).hex()[:16], nonce_dir)
    return text, path
