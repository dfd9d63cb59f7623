"""The host authenticates the TTP's release by its signed receipt (any transport).

Anyone who sees an attestation request can seal a release of their own to
the bind key (its public area is in the request), so a host that cannot
authenticate the TTP's answer (RPC: the bus is not trusted) would open a
forged {N', H}. The TTP's answer carries its signed receipt of the decision,
and the receipt carries ``nonce_binding`` = HMAC(HKDF(N), token digest). Once
the release is open, the host checks, against the TTP's pinned receipt key,
that the receipt is a trusted decision about this launch id, this host and
this token, bound to the very N it just opened. Only a holder of N (the TTP,
or the tenant) can have sealed that release.
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping

from cryptography.hazmat.primitives.asymmetric import ec

from trusted_launch.compute.errors import ReleaseUnauthenticated
from trusted_launch.crypto.receipt import (
    ReceiptError,
    check_binding,
    load_receipt_public_key,
    public_key_pem,
    receipt_key_id,
    verify_receipt,
)
from trusted_launch.crypto.sealing import ReleasedSecrets

ReceiptKeys = Mapping[str, ec.EllipticCurvePublicKey]


def load_receipt_keys(path: str | None, *, required: bool) -> ReceiptKeys | None:
    """The TTP receipt key in the PEM file ``path``, by key id; None when unset and optional.

    ValueError names the option when the file is required but unset, unreadable
    or not an ECDSA P-256 public key.
    """
    if not path:
        if required:
            raise ValueError("[trusted_launch] ttp_transport = rpc needs ttp_receipt_key_file "
                             "(the TTP's receipt key from GET /v1/keys): over the bus, only "
                             "the TTP's signed receipt proves a release comes from the TTP")
        return None
    try:
        key = load_receipt_public_key(pathlib.Path(path).read_bytes())
    except OSError as exc:
        raise ValueError(f"[trusted_launch] ttp_receipt_key_file {path}: "
                         f"{exc.strerror}") from None
    except ReceiptError as exc:
        raise ValueError(f"[trusted_launch] ttp_receipt_key_file {path}: {exc}") from None
    return {receipt_key_id(key): key}


def receipt_key_pem(keys: ReceiptKeys | None) -> bytes | None:
    """The PEM of the (one) pinned receipt key, for the guest's config drive; None if unset."""
    if not keys:
        return None
    return public_key_pem(next(iter(keys.values()))).encode("ascii")


def check_release_receipt(receipt: object, keys: ReceiptKeys, *, launch_id: str, host: str,
                          token_digest: bytes, released: ReleasedSecrets) -> None:
    """ReleaseUnauthenticated unless ``receipt`` proves the TTP released ``released`` here."""
    if receipt is None:
        raise ReleaseUnauthenticated("the TTP's answer carries no signed receipt")
    try:
        verified = verify_receipt(receipt, keys).receipt
        check_binding(verified, nonce=released.nonce, token_digest=token_digest)
    except ReceiptError as exc:
        raise ReleaseUnauthenticated(f"receipt: {exc}") from None
    if not verified.trusted or verified.launch_id != launch_id or verified.host != host:
        raise ReleaseUnauthenticated("the receipt is not a trusted decision about this launch "
                                     "on this host")
