"""Exception types of the crypto building blocks.

Messages name what is wrong and never include a nonce, key or plaintext.
"""


class CryptoError(ValueError):
    """Base class for every failure in :mod:`trusted_launch.crypto`."""


class InvalidImageDigest(CryptoError):
    """An image digest with an unknown algorithm or the wrong length."""


class InvalidNonce(CryptoError):
    """A nonce file or value that is not exactly 32 bytes in a known encoding."""


class TokenError(CryptoError):
    """A launch token cannot be used."""


class TokenMalformed(TokenError):
    """The token text or its decrypted plaintext does not decode."""


class UnknownTokenKey(TokenError):
    """The token is sealed to a TTP key id this TTP does not hold."""


class TokenExpired(TokenError):
    """The token's expiry time has passed."""


class TokenDecryptionFailed(TokenError):
    """HPKE open failed: wrong key, or the token was altered."""


class SealingError(CryptoError):
    """Released secrets cannot be sealed or opened."""


class UnsupportedBindKey(SealingError):
    """A bind key type or size that the release envelope does not support."""


class EnvelopeMalformed(SealingError):
    """The envelope or its plaintext does not decode."""


class EnvelopeDecryptionFailed(SealingError):
    """AEAD open failed: wrong bind key, wrong AAD, or the envelope was altered."""
