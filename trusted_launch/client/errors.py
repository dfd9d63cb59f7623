"""Exception types of the tenant tooling."""


class ClientError(Exception):
    """Base class: a tenant-side operation failed."""


class TTPKeyError(ClientError):
    """The TTP's public key could not be fetched or is unusable."""


class UnknownProfileName(ClientError):
    """The token asks for a security profile that the TTP does not publish."""


class MalformedToken(ClientError):
    """A launch token that is cut short, altered or not a token at all."""


class NonceStoreError(ClientError):
    """The nonce directory or file is unsafe or cannot be written."""


class VMVerificationFailed(ClientError):
    """The VM did not prove that it knows the launch nonce, or answered wrongly."""


class ReceiptUnavailable(ClientError):
    """The TTP's receipts could not be fetched, or one of them does not verify."""
