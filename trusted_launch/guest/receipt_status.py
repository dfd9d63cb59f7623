"""The VM's trust status for its user: the TTP's receipt of this launch, checked.

The host may put ``trusted_launch/receipt.json`` (the signed receipt it got
from the TTP) and ``trusted_launch/receipt_key.pem`` (the TTP's receipt
public key) on the config drive. The agent reports the receipt's verdict and
whether its signature verifies and whether it is bound to this VM's N. A key
that came on the config drive was handed over by the host; a key pinned in
the image (``--receipt-key``) does not depend on the host.
"""

from __future__ import annotations

import os
import pathlib
import tempfile
from dataclasses import dataclass

from trusted_launch.crypto.receipt import (
    Receipt,
    ReceiptError,
    check_binding,
    format_time,
    load_receipt_public_key,
    read_unverified,
    receipt_key_id,
    verify_receipt,
)
from trusted_launch.guest.identity import CONFIG_DRIVE_MOUNTS

RECEIPT_FILE = "receipt.json"
RECEIPT_KEY_FILE = "receipt_key.pem"
MAX_RECEIPT_BYTES = 64 * 1024


@dataclass(frozen=True)
class ReceiptStatus:
    """What the guest can say about its launch receipt (nothing secret)."""

    present: bool
    signature: str = "absent"  # ok | invalid | unchecked | absent
    bound_to_nonce: bool = False
    receipt: Receipt | None = None
    key_source: str | None = None  # "config drive" | "pinned"
    problem: str | None = None

    @property
    def verified(self) -> bool:
        """Signature OK, bound to this VM's N, and the verdict is trusted."""
        return (self.signature == "ok" and self.bound_to_nonce and self.receipt is not None
                and self.receipt.trusted)

    def to_json(self) -> dict:
        """The ``receipt`` member of GET /v1/status."""
        document: dict = {"present": self.present, "signature": self.signature,
                          "bound_to_nonce": self.bound_to_nonce, "key_source": self.key_source,
                          "verified": self.verified, "problem": self.problem}
        if self.receipt is not None:
            receipt = self.receipt
            document.update(verdict=receipt.verdict, profile=receipt.requested_profile,
                            satisfied_profile=receipt.satisfied_profile, host=receipt.host,
                            attestation_id=receipt.attestation_id, issued_at=receipt.issued_at,
                            time=format_time(receipt.issued_at),
                            image_digest=receipt.image_digest)
        return document


def config_drive_file(name: str) -> pathlib.Path | None:
    """``trusted_launch/<name>`` on the first mounted config drive holding it."""
    for mount in CONFIG_DRIVE_MOUNTS:
        candidate = pathlib.Path(mount) / "trusted_launch" / name
        if candidate.is_file():
            return candidate
    return None


def _read(path: str | os.PathLike) -> bytes:
    with open(path, "rb") as handle:
        data = handle.read(MAX_RECEIPT_BYTES + 1)
    if len(data) > MAX_RECEIPT_BYTES:
        raise ReceiptError(f"{path} is larger than {MAX_RECEIPT_BYTES} bytes")
    return data


def load_receipt_status(receipt_file: str | os.PathLike | None,
                        key_file: str | os.PathLike | None, nonce: bytes, *,
                        key_source: str = "config drive") -> ReceiptStatus:
    """Check the receipt file against the key file and N; never raises for bad input."""
    if receipt_file is None or not pathlib.Path(receipt_file).is_file():
        return ReceiptStatus(present=False)
    try:
        document = _read(receipt_file)
        _, receipt = read_unverified(document)
    except (OSError, ReceiptError) as exc:
        return ReceiptStatus(present=True, signature="invalid", problem=str(exc))
    bound = _bound(receipt, nonce)
    if key_file is None or not pathlib.Path(key_file).is_file():
        return ReceiptStatus(True, "unchecked", bound, receipt, None,
                             "no TTP receipt key to check the signature with")
    try:
        public_key = load_receipt_public_key(_read(key_file))
        verified = verify_receipt(document, {receipt_key_id(public_key): public_key})
    except (OSError, ReceiptError) as exc:
        return ReceiptStatus(True, "invalid", False, None, key_source, str(exc))
    bound = _bound(verified.receipt, nonce)
    return ReceiptStatus(True, "ok", bound, verified.receipt, key_source,
                         None if bound else "the receipt is not bound to this VM's launch "
                                            "nonce")


def _bound(receipt: Receipt, nonce: bytes) -> bool:
    try:
        check_binding(receipt, nonce=nonce)
    except ReceiptError:
        return False
    return True


def motd_text(status: ReceiptStatus, ttp_url: str | None) -> str:
    """A short message for /etc/motd."""
    ttp = f"TTP {ttp_url}" if ttp_url else "the TTP"
    if not status.present:
        return "trusted launch: no launch receipt on this VM\n"
    receipt = status.receipt
    if receipt is None:
        return f"trusted launch: WARNING: the launch receipt is unusable ({status.problem})\n"
    if not receipt.trusted:
        return (f"trusted launch: WARNING: {ttp} refused this launch on host {receipt.host} "
                f"({receipt.check}: {receipt.reason})\n")
    checks = {"ok": "receipt signature OK", "unchecked": "receipt signature NOT checked: "
              "no TTP receipt key", "invalid": "receipt signature INVALID"}[status.signature]
    if status.signature == "ok" and status.key_source:
        checks += f", key from {status.key_source}"
    if not status.bound_to_nonce:
        checks += "; NOT bound to this VM's launch nonce"
    return (f"trusted launch: verified by {ttp} for profile {receipt.requested_profile} "
            f"(host meets {receipt.satisfied_profile}) on host {receipt.host} at "
            f"{format_time(receipt.issued_at)} ({checks})\n")


def write_motd(path: str | os.PathLike, text: str) -> None:
    """Replace ``path`` atomically with ``text`` (mode 0644: the message is public)."""
    target = pathlib.Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, target)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise
