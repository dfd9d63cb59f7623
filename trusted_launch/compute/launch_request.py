"""What an instance asks of the trusted compute driver, read without extra DB trips.

A trusted launch is asked for by the server metadata ``trusted_token`` and
``trusted_ttp`` (``trusted_sp`` is for the scheduler). Nova loads an
instance's metadata whenever the API made the call (build, rebuild, reboot,
moves, start) and at ``init_host``, but not on every path, and reading an
unloaded ``instance.metadata`` costs a database round trip (or fails on an
instance without a context). So the driver decides from what Nova loaded:

* metadata loaded: it says whether the instance asks for a trusted launch;
  an instance that was launched trusted (the nonce commitment in its
  system metadata) but no longer carries both properties is refused, so a
  trusted guest never starts again as a plain one;
* metadata not loaded: the commitment in system metadata (which
  ``LibvirtDriver`` itself reads on these paths) says whether the instance
  was launched trusted; only then is the metadata loaded for its token.
  Without the commitment the instance never ran a trusted launch and takes
  the plain path, exactly as ``LibvirtDriver``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from trusted_launch.compute.relaunch import COMMITMENT_KEY

TOKEN_KEY = "trusted_token"  # noqa: S105 - a metadata key, not a secret
TTP_KEY = "trusted_ttp"
PROFILE_KEY = "trusted_sp"


class LaunchRequestInvalid(ValueError):
    """The instance's trusted launch properties are incomplete or cannot be read."""


@dataclass(frozen=True)
class TrustedLaunchRequest:
    """What an instance's metadata asks for. ``repr`` hides the token."""

    token: str = field(repr=False)
    ttp_url: str
    profile: str | None


def trusted_launch_request(metadata: dict | None) -> TrustedLaunchRequest | None:
    """The request in server metadata; None if it asks for no trusted launch.

    ValueError if only some of the properties are present.
    """
    metadata = metadata or {}
    token, ttp_url = metadata.get(TOKEN_KEY), metadata.get(TTP_KEY)
    if token is None and ttp_url is None:
        return None
    if not token or not ttp_url:
        raise LaunchRequestInvalid(
            f"trusted launch needs both server properties {TOKEN_KEY} and {TTP_KEY}; "
            f"{TTP_KEY if token else TOKEN_KEY} is missing")
    return TrustedLaunchRequest(token=token, ttp_url=ttp_url,
                                profile=metadata.get(PROFILE_KEY))


def launched_trusted(instance) -> bool:
    """True if a trusted launch of ``instance`` succeeded before (its commitment exists)."""
    return COMMITMENT_KEY in (instance.system_metadata or {})


def instance_launch_request(instance) -> TrustedLaunchRequest | None:
    """The trusted launch ``instance`` needs, None for a plain one; never loads metadata
    of an instance that was not launched trusted.

    LaunchRequestInvalid if the properties are incomplete, missing on an instance
    launched trusted, or cannot be loaded for it.
    """
    if not instance.obj_attr_is_set("metadata"):
        if not launched_trusted(instance):
            return None
        try:
            instance.metadata  # noqa: B018 - loads the trusted instance's metadata
        except Exception as exc:  # a failed lazy load must refuse, whatever its type
            raise LaunchRequestInvalid(
                "the instance was launched trusted but its server metadata cannot be "
                f"loaded: {type(exc).__name__}") from None
    request = trusted_launch_request(instance.metadata)
    if request is None and launched_trusted(instance):
        raise LaunchRequestInvalid(
            f"the instance was launched trusted but its server properties {TOKEN_KEY} and "
            f"{TTP_KEY} are gone; restore them to start it again")
    return request


__all__ = ["PROFILE_KEY", "TOKEN_KEY", "TTP_KEY", "LaunchRequestInvalid",
           "TrustedLaunchRequest", "instance_launch_request", "launched_trusted",
           "trusted_launch_request"]
