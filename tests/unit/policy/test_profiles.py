"""The ordered profile set."""

from __future__ import annotations

import pytest

from trusted_launch.policy import PolicyError, ProfileSet, UnknownProfile, load_profile


def profile(name: str, level: int):
    return load_profile({"name": name, "level": level})


@pytest.fixture
def profiles() -> ProfileSet:
    return ProfileSet([profile("high", 30), profile("low", 10), profile("medium", 20)])


def test_ordered_by_level(profiles):
    assert profiles.names() == ["low", "medium", "high"]
    assert [p.level for p in profiles] == [10, 20, 30]
    assert len(profiles) == 3


def test_at_least_returns_the_profile_and_stricter_ones(profiles):
    assert [p.name for p in profiles.at_least("medium")] == ["medium", "high"]
    assert [p.name for p in profiles.at_least("low")] == ["low", "medium", "high"]
    assert [p.name for p in profiles.at_least("high")] == ["high"]


def test_get_and_contains(profiles):
    assert profiles.get("medium").level == 20
    assert "medium" in profiles and "ultra" not in profiles and 5 not in profiles


@pytest.mark.parametrize("name", ["ultra", "", None])
def test_unknown_names_raise_a_policy_error(profiles, name):
    with pytest.raises(UnknownProfile, match="no security profile named"):
        profiles.get(name)
    with pytest.raises(UnknownProfile):
        profiles.at_least(name)


def test_duplicate_names_are_rejected():
    with pytest.raises(PolicyError, match="'low' is used twice"):
        ProfileSet([profile("low", 10), profile("low", 20)])


def test_duplicate_levels_are_rejected():
    with pytest.raises(PolicyError, match="share level 10"):
        ProfileSet([profile("low", 10), profile("basic", 10)])


def test_empty_set():
    empty = ProfileSet()
    assert empty.names() == [] and len(empty) == 0
    with pytest.raises(UnknownProfile):
        empty.at_least("low")
