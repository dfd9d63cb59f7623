"""SecurityProfileFilter over FakeHostStates in real aggregates."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.scheduler.helpers import aggregate, host, request_spec
from trusted_launch.scheduler.levels import ProfileConfigError
from trusted_launch.scheduler.security_profile_filter import SecurityProfileFilter

LOW, MEDIUM, HIGH = (aggregate(i, trusted_sp=p) for i, p in enumerate(("low", "medium", "high")))
OTHER = aggregate(9, ssd="true")
HOSTS = [host("low", LOW), host("medium", MEDIUM), host("high", HIGH, OTHER),
         host("plain", OTHER), host("bare")]


def names(hosts) -> list[str]:
    return [h.host for h in hosts]


@pytest.fixture
def flt(trusted_conf) -> SecurityProfileFilter:
    return SecurityProfileFilter()


def test_request_without_profile_passes_every_host(flt) -> None:
    assert flt.filter_all(HOSTS, request_spec()) == HOSTS


@pytest.mark.parametrize(("profile", "expected"), [
    ("low", ["low", "medium", "high"]), ("medium", ["medium", "high"]), ("high", ["high"]),
])
def test_profile_or_stricter_passes(flt, profile, expected) -> None:
    assert names(flt.filter_all(HOSTS, request_spec(hints={"trusted_sp": profile}))) == expected


def test_unknown_requested_profile_passes_no_host(flt) -> None:
    assert flt.filter_all(HOSTS, request_spec(hints={"trusted_sp": "ultra"})) == []


def test_conflicting_aggregates_count_as_the_weakest(flt) -> None:
    both = host("both", HIGH, LOW)
    assert flt.filter_all([both], request_spec(hints={"trusted_sp": "medium"})) == []
    assert flt.filter_all([both], request_spec(hints={"trusted_sp": "low"})) == [both]


def test_unknown_aggregate_profile_fails_every_profiled_request(flt) -> None:
    typo = host("typo", aggregate(7, trusted_sp="hgih"))
    assert flt.filter_all([typo], request_spec(hints={"trusted_sp": "low"})) == []
    assert flt.filter_all([typo], request_spec()) == [typo]


def test_aggregate_key_and_levels_come_from_config(trusted_conf) -> None:
    trusted_conf(profile_aggregate_key="tier", security_profiles=["bronze", "gold"])
    gold, bronze = host("g", aggregate(1, tier="gold")), host("b", aggregate(2, tier="bronze"))
    old_style = host("old", HIGH)
    spec = request_spec(hints={"trusted_sp": "gold"})
    assert names(SecurityProfileFilter().filter_all([gold, bronze, old_style], spec)) == ["g"]


def test_bad_profile_list_stops_the_filter_at_start(trusted_conf) -> None:
    trusted_conf(security_profiles=["low", "High"])
    with pytest.raises(ProfileConfigError, match="'High'"):
        SecurityProfileFilter()


def test_unreadable_metadata_fails_closed(trusted_conf) -> None:
    trusted_conf(profile_from_server_metadata=True)
    # No request context to read the server's metadata with: nothing passes,
    # not even for a request whose other sources name no profile.
    assert SecurityProfileFilter().filter_all(HOSTS, request_spec()) == []


def test_rebuild_is_filtered_too(flt) -> None:
    spec = request_spec(hints={"trusted_sp": "high", "_nova_check_type": "rebuild"})
    assert names(flt.filter_all(HOSTS, spec)) == ["high"]


def test_runs_once_per_request(flt) -> None:
    assert flt.run_filter_for_index(0)
    assert not flt.run_filter_for_index(1)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(host_profiles=st.lists(st.sampled_from(["low", "medium", "high", "bogus", None]),
                              max_size=3),
       requested=st.sampled_from(["low", "medium", "high", "bogus", None]))
def test_host_passes_agrees_with_filter_all(trusted_conf, host_profiles, requested) -> None:
    flt = SecurityProfileFilter()
    aggs = [aggregate(i, trusted_sp=p) if p else aggregate(i) for i, p in enumerate(host_profiles)]
    candidate = host("h", *aggs)
    spec = request_spec(hints={"trusted_sp": requested} if requested else None)
    known = {"low": 0, "medium": 1, "high": 2}
    ranks = [known.get(p, -1) for p in host_profiles if p]
    expected = requested is None or (
        requested in known and bool(ranks) and min(ranks) >= known[requested])
    assert flt.host_passes(candidate, spec) is expected
    assert (flt.filter_all([candidate], spec) == [candidate]) is expected
