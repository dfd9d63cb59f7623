"""Profile ordering and trait names."""

from __future__ import annotations

import pytest

from trusted_launch.scheduler.levels import (
    ProfileConfigError,
    ProfileLevels,
    levels_for,
    trait_for_level,
)

DEFAULT = ("low", "medium", "high")


def test_ranks_follow_configured_order() -> None:
    levels = ProfileLevels(DEFAULT)
    assert [levels.rank(name) for name in DEFAULT] == [0, 1, 2]
    assert levels.rank("ultra") is None


@pytest.mark.parametrize(("host", "requested", "expected"), [
    ("high", "high", True), ("high", "medium", True), ("high", "low", True),
    ("medium", "high", False), ("medium", "medium", True), ("low", "medium", False),
    (None, "low", False), ("ultra", "low", False), ("high", "ultra", False),
])
def test_stricter_profile_satisfies_weaker_request(host, requested, expected) -> None:
    assert ProfileLevels(DEFAULT).satisfies(host, requested) is expected


def test_custom_order_reverses_meaning() -> None:
    levels = ProfileLevels(["gold", "bronze"])
    assert levels.satisfies("bronze", "gold")
    assert not levels.satisfies("gold", "bronze")


def test_trait_for_level() -> None:
    assert trait_for_level("high") == "CUSTOM_TRUSTED_SP_HIGH"
    assert trait_for_level("pci-dss_2") == "CUSTOM_TRUSTED_SP_PCI_DSS_2"


def test_level_for_trait_round_trips() -> None:
    levels = ProfileLevels(["low", "pci-dss"])
    assert levels.level_for_trait("CUSTOM_TRUSTED_SP_PCI_DSS") == "pci-dss"
    assert levels.level_for_trait("CUSTOM_TRUSTED_SP_HIGH") is None


@pytest.mark.parametrize("names", [
    [], ["low", "low"], ["a-b", "a_b"], ["High"], ["x" * 33], [""], ["low", "me dium"],
])
def test_bad_configuration_is_rejected(names) -> None:
    with pytest.raises(ProfileConfigError):
        ProfileLevels(names)


def test_collision_message_names_both_profiles() -> None:
    with pytest.raises(ProfileConfigError, match="'a-b' and 'a_b'"):
        ProfileLevels(["a-b", "a_b"])


def test_levels_for_caches_per_tuple() -> None:
    assert levels_for(DEFAULT) is levels_for(DEFAULT)
    assert levels_for(DEFAULT) is not levels_for(("low",))
