"""Re-attestation before a trusted instance's guest starts again on a host.

Moves (cold migration, resize, live migration, evacuate, unshelve), rebuild,
reboots and power on all start a guest that was launched before. Each time,
the host that starts it runs the protocol again with the instance's token and
uuid; the TTP accepts a token again for the launch id that first redeemed it.

N never changes for an instance: the TTP re-releases it from the same token.
The first launch records a one-way commitment to N in the instance's system
metadata (HMAC-SHA256 keyed by N over the instance uuid; it reveals nothing
of N); every later release must match it (constant-time comparison). So a
token swapped into the server metadata cannot give a started-again guest a
different N than the one its tenant holds.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import MutableMapping

from nova import exception

from trusted_launch.compute.errors import LaunchRefused

#: System metadata key of the commitment to the instance's launch nonce.
COMMITMENT_KEY = "trusted_launch_nonce_commitment"
_COMMITMENT_LABEL = b"trusted-launch/v1 nonce commitment\0"


class NonceChanged(LaunchRefused):
    """The TTP released an N other than the one this instance was launched with."""

    check = "nonce_changed"


class TrustedRelaunchRefused(exception.NovaException):
    """A guest that was launched before may not start on this host (fails the operation)."""

    msg_fmt = "Trusted launch refused to start the instance on this host (%(operation)s): " \
              "%(reason)s"


def nonce_commitment(nonce: bytes, instance_uuid: str) -> str:
    """Hex HMAC-SHA256(N, label || uuid): binds N to the instance without revealing it."""
    return hmac.new(nonce, _COMMITMENT_LABEL + instance_uuid.encode("utf-8"),
                    hashlib.sha256).hexdigest()


def check_or_commit(system_metadata: MutableMapping[str, str], instance_uuid: str,
                    nonce: bytes) -> bool:
    """Compare ``nonce`` with the recorded commitment, or record it; True if recorded now.

    Raises NonceChanged if a commitment exists and ``nonce`` does not match it.
    """
    actual = nonce_commitment(nonce, instance_uuid)
    expected = system_metadata.get(COMMITMENT_KEY)
    if expected is None:
        system_metadata[COMMITMENT_KEY] = actual
        return True
    if not hmac.compare_digest(expected.encode("ascii", "replace"), actual.encode("ascii")):
        raise NonceChanged("the TTP released a launch nonce other than the one this instance "
                           "was launched with (was its trusted_token replaced?)")
    return False


__all__ = ["COMMITMENT_KEY", "NonceChanged", "TrustedRelaunchRefused", "check_or_commit",
           "nonce_commitment"]
