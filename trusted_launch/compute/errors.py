"""Why a trusted launch was refused on this host."""

from __future__ import annotations


class LaunchRefused(Exception):
    """Base: the host must not boot the instance. ``check`` names the cause."""

    check = "launch_refused"

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"trusted launch refused ({self.check}): {reason}")


class TTPNotAllowed(LaunchRefused):
    """The instance names a TTP that is not on the operator's allow-list."""

    check = "ttp_not_allowed"


class TTPUnreachable(LaunchRefused):
    """The TTP could not be reached or did not answer in time."""

    check = "ttp_unreachable"


class AttestationRefused(LaunchRefused):
    """The TTP judged this host's evidence and refused it."""

    def __init__(self, check: str, reason: str) -> None:
        self.check = check
        super().__init__(reason)


class TTPProtocolError(LaunchRefused):
    """The TTP answered something this host cannot use."""

    check = "ttp_protocol"


class ReleaseUnusable(LaunchRefused):
    """The released secrets could not be opened in this host's TPM."""

    check = "release_unusable"


class ImageDigestMismatch(LaunchRefused):
    """The image this host would boot is not the image the tenant sealed."""

    check = "image_digest_mismatch"


class ReleaseUnauthenticated(LaunchRefused):
    """The release is not proven to come from the TTP: no valid receipt binds it to N."""

    check = "release_unauthenticated"
