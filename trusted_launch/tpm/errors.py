"""Exception types of the TPM access layer.

Messages name the operation and the TPM response code; they never contain
secrets (decrypted data, shared points, nonces).
"""

from __future__ import annotations


class TPMError(Exception):
    """Base class: a TPM operation failed or the TPM is misconfigured."""


class TCTIConfigError(TPMError, ValueError):
    """The configured TCTI string cannot be understood."""


class TPMUnavailable(TPMError):
    """The TPM (device, swtpm or resource manager) cannot be reached."""


class TPMCommandError(TPMError):
    """The TPM refused a command.

    ``rc`` is the full TSS2 response code, ``error`` the code with its handle,
    session and parameter number stripped (e.g. 0x9d for TPM_RC_POLICY_FAIL).
    """

    def __init__(self, operation: str, rc: int, detail: str, error: int | None = None) -> None:
        self.operation = operation
        self.rc = rc
        self.error = rc if error is None else error
        super().__init__(f"TPM {operation} failed: {detail} (rc 0x{rc:x})")


class PCRPolicyMismatch(TPMCommandError):
    """The host's PCRs no longer match the PolicyPCR of a bind key."""

    def __init__(self, operation: str, rc: int) -> None:
        super().__init__(
            operation, rc,
            "the host's PCRs no longer match the bind key's PolicyPCR policy")



class NoEKCertificate(TPMError):
    """The TPM holds no EK certificate in the standard NV indices."""


class UnexpectedKeyError(TPMError):
    """A persistent handle holds an object that is not the expected key."""


class InvalidPCRSelection(TPMError, ValueError):
    """A PCR selection string such as ``sha256:0,1,2`` is malformed."""
