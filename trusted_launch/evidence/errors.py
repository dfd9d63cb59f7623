"""Exception types for evidence parsing and verification."""


class EvidenceError(ValueError):
    """Base class: the evidence is malformed or does not verify."""


class ParseError(EvidenceError):
    """A structure could not be decoded.

    The message names the structure, the byte offset and the problem, for
    example ``event log at offset 112: event size 4294967295 runs past the
    end (1024 bytes left)``.
    """

    def __init__(self, what: str, offset: int, problem: str) -> None:
        self.what = what
        self.offset = offset
        self.problem = problem
        super().__init__(f"{what} at offset {offset}: {problem}")


class UnknownAlgorithmError(ParseError):
    """A TPM algorithm identifier that this code does not support."""


class VerificationError(EvidenceError):
    """Well-formed evidence that fails a cryptographic or consistency check."""


class TemplateHashMismatch(VerificationError):
    """An IMA entry whose template hash does not match its template data."""


class SignatureInvalid(VerificationError):
    """A TPM signature does not verify with the given public key."""


class PCRDigestMismatch(VerificationError):
    """A quote's PCR digest does not match the replayed PCR values."""


class AttestationMismatch(VerificationError):
    """A signed TPMS_ATTEST of the wrong type, extraData or certified name."""


class UnsuitableKey(VerificationError):
    """A key whose type, attributes or scheme do not fit the operation."""


class MissingPCRValue(VerificationError):
    """A selected PCR has no value (or a value of the wrong size) to check."""


class EventLogError(ParseError):
    """A TCG PC Client firmware event log whose framing is malformed."""


class UnknownTemplateError(ParseError):
    """An IMA measurement-list entry whose template this code cannot decode."""


class PcrIndexMismatch(VerificationError):
    """An IMA entry that extends a PCR other than the one being replayed."""


class ReplayStateError(EvidenceError):
    """A saved IMA replay state that is malformed or belongs to another list."""
