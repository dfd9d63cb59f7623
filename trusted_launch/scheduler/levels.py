"""Ordering of security profile names, and their placement traits.

Profiles are configured weakest first (``[trusted_launch] security_profiles``);
a profile's rank is its index, and a host of rank ``h`` satisfies a request of
rank ``r`` when ``h >= r``. The module is pure: no Nova import, no I/O.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

PROFILE_NAME_PATTERN = r"[a-z0-9_-]{1,32}"
TRAIT_PREFIX = "CUSTOM_TRUSTED_SP_"

_NAME_RE = re.compile(PROFILE_NAME_PATTERN)


class ProfileConfigError(ValueError):
    """The configured list of security profiles is unusable."""


def trait_for_level(level: str) -> str:
    """Placement trait for a profile: ``high`` -> ``CUSTOM_TRUSTED_SP_HIGH``."""
    if not _NAME_RE.fullmatch(level):
        raise ProfileConfigError(
            f"security profile name {level!r} does not match {PROFILE_NAME_PATTERN}")
    return TRAIT_PREFIX + level.upper().replace("-", "_")


class ProfileLevels:
    """Ranks of the configured security profiles, weakest first."""

    def __init__(self, names: Iterable[str]) -> None:
        ordered = tuple(names)
        if not ordered:
            raise ProfileConfigError("no security profiles are configured")
        self._rank = self._ranks(ordered)
        self._trait_level = self._traits(ordered)
        self.names = ordered

    @staticmethod
    def _ranks(names: tuple[str, ...]) -> dict[str, int]:
        ranks: dict[str, int] = {}
        for rank, name in enumerate(names):
            if name in ranks:
                raise ProfileConfigError(f"security profile {name!r} is listed twice")
            ranks[name] = rank
        return ranks

    @staticmethod
    def _traits(names: tuple[str, ...]) -> dict[str, str]:
        traits: dict[str, str] = {}
        for name in names:
            trait = trait_for_level(name)
            if trait in traits:
                raise ProfileConfigError(
                    f"security profiles {traits[trait]!r} and {name!r} map to the "
                    f"same trait {trait}")
            traits[trait] = name
        return traits

    def rank(self, name: str) -> int | None:
        """Rank of a profile name, or None if it is not configured."""
        return self._rank.get(name)

    def level_for_trait(self, trait: str) -> str | None:
        """Profile named by a ``CUSTOM_TRUSTED_SP_*`` trait, or None if unknown."""
        return self._trait_level.get(trait)

    def satisfies(self, host_profile: str | None, requested: str) -> bool:
        """True if a host of ``host_profile`` may run a ``requested`` server."""
        requested_rank = self._rank.get(requested)
        host_rank = self._rank.get(host_profile) if host_profile is not None else None
        if requested_rank is None or host_rank is None:
            return False
        return host_rank >= requested_rank


@functools.lru_cache(maxsize=8)
def levels_for(names: tuple[str, ...]) -> ProfileLevels:
    """Cached :class:`ProfileLevels` for a configured tuple of names."""
    return ProfileLevels(names)
