"""An ordered set of security profiles (weakest first)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from trusted_launch.policy.errors import PolicyError, UnknownProfile
from trusted_launch.policy.profile import SecurityProfile


class ProfileSet:
    """Profiles ordered by level; names and levels are unique.

    A stricter (higher level) profile satisfies a request for a weaker one.
    """

    def __init__(self, profiles: Iterable[SecurityProfile] = ()) -> None:
        ordered = sorted(profiles, key=lambda p: p.level)
        by_name: dict[str, SecurityProfile] = {}
        levels: dict[int, str] = {}
        for profile in ordered:
            if profile.name in by_name:
                raise PolicyError("profiles", f"profile name {profile.name!r} is used twice")
            if profile.level in levels:
                raise PolicyError("profiles", f"profiles {levels[profile.level]!r} and "
                                              f"{profile.name!r} share level {profile.level}")
            by_name[profile.name] = profile
            levels[profile.level] = profile.name
        self._ordered = tuple(ordered)
        self._by_name = by_name

    def get(self, name: str) -> SecurityProfile:
        """The profile called ``name``; :class:`UnknownProfile` if there is none."""
        try:
            return self._by_name[name]
        except (KeyError, TypeError):
            raise UnknownProfile(str(name)) from None

    def at_least(self, name: str) -> list[SecurityProfile]:
        """``name`` and every stricter profile, weakest first."""
        floor = self.get(name).level
        return [p for p in self._ordered if p.level >= floor]

    def names(self) -> list[str]:
        """Profile names, weakest first."""
        return [p.name for p in self._ordered]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._by_name

    def __iter__(self) -> Iterator[SecurityProfile]:
        return iter(self._ordered)

    def __len__(self) -> int:
        return len(self._ordered)

    def __repr__(self) -> str:
        return f"ProfileSet({', '.join(f'{p.name}={p.level}' for p in self._ordered)})"
