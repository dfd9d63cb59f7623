"""Nova API validator for the ``trusted_launch:sp`` flavor extra spec.

Registered through the ``nova.api.extra_spec_validators`` entry point. The
API cannot rely on the scheduler's profile list, so only the name's format is
checked here; a well-formed but unconfigured name is refused at scheduling.
"""

from __future__ import annotations

from nova.api.validation.extra_specs import base

from trusted_launch.scheduler.levels import PROFILE_NAME_PATTERN
from trusted_launch.scheduler.requirement import EXTRA_SPEC_KEY

EXTRA_SPEC_VALIDATORS = [
    base.ExtraSpecValidator(
        name=EXTRA_SPEC_KEY,
        description=(
            "Security profile that hosts of this flavor's servers must meet or "
            "exceed (trusted-launch), for example 'high'."
        ),
        value={"type": str, "pattern": PROFILE_NAME_PATTERN},
    ),
]


def register() -> list[base.ExtraSpecValidator]:
    """Validators for Nova's extra-spec registry."""
    return EXTRA_SPEC_VALIDATORS
