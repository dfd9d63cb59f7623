"""TPM 2.0 access for the compute host (tpm2-pytss ESAPI).

``TPMDevice`` owns one ESAPI context; ``keys`` holds the EK/SRK/AK logic and
``bindkeys`` the PCR-locked bind keys, their pool, Certify and decryption.
"""

from trusted_launch.tpm.bindkeys import (
    BindKey,
    BindKeyPool,
    certify,
    create_bind_key,
    ecdh_zgen,
    rsa_decrypt,
)
from trusted_launch.tpm.device import TPMDevice
from trusted_launch.tpm.errors import PCRPolicyMismatch, TPMError, TPMUnavailable
from trusted_launch.tpm.keys import AttestationKey

__all__ = ["AttestationKey", "BindKey", "BindKeyPool", "PCRPolicyMismatch", "TPMDevice",
           "TPMError", "TPMUnavailable", "certify", "create_bind_key", "ecdh_zgen",
           "rsa_decrypt"]
