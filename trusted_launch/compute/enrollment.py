"""Enrol this host's TPM at a TTP: EK certificate in, AK certificate out.

The TTP checks the EK certificate against the TPM vendors' CAs, answers with
TPM2_MakeCredential over the AK's Name, and issues an AK certificate only if
this TPM can activate that credential, that is, only if the AK lives in the
TPM whose EK was certified.
"""

from __future__ import annotations

import base64

from trusted_launch.compute.errors import TTPProtocolError
from trusted_launch.compute.ttp_client import BaseTTPClient, b64


def enroll_host(device, ttp: BaseTTPClient, host_name: str) -> str:
    """Run enrollment for ``host_name``; return the AK certificate (PEM)."""
    ak = device.ensure_attestation_key()
    challenge = ttp.enroll({
        "host": host_name,
        "ek_certificate": b64(device.ek_certificate()),
        "ek_public": b64(device.ek_public()),
        "ak_public": b64(ak.public),
    })
    try:
        blob = base64.b64decode(challenge["credential_blob"], validate=True)
        secret = base64.b64decode(challenge["encrypted_secret"], validate=True)
    except (KeyError, TypeError, ValueError):
        raise TTPProtocolError("enrollment answer lacks a valid credential challenge") from None
    answer = ttp.activate(host_name, {"secret": b64(device.activate_credential(blob, secret))})
    certificate = answer.get("ak_certificate")
    if not isinstance(certificate, str) or "BEGIN CERTIFICATE" not in certificate:
        raise TTPProtocolError("activation answer carries no AK certificate")
    return certificate
