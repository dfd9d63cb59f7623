"""The qualifying data that binds a TPM2_Certify to one launch request.

The host passes it as ``qualifyingData``; the TTP recomputes it and requires
``TPMS_ATTEST.extraData`` to equal it, so evidence made for one token, bind
key or launch cannot be replayed for another.
"""

from __future__ import annotations

import hashlib

from trusted_launch.crypto._encoding import length_prefixed
from trusted_launch.crypto.token import token_digest

CERTIFY_LABEL = b"trusted-launch/v1 certify"


def certify_qualifying_data(token: str, bind_key_name: bytes, launch_id: str) -> bytes:
    """SHA-256(label || u16-prefixed token digest, bind key Name, launch id UTF-8)."""
    message = CERTIFY_LABEL + length_prefixed(
        token_digest(token), bytes(bind_key_name), launch_id.encode("utf-8"))
    return hashlib.sha256(message).digest()
