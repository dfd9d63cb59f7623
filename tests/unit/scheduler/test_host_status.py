"""HostTrustStatus and SecurityProfileFilter's use of it (real Nova objects, no bus)."""

from __future__ import annotations

import time

import pytest

from tests.unit.scheduler.helpers import aggregate, host, request_spec
from trusted_launch.scheduler import security_profile_filter as spf
from trusted_launch.scheduler.host_status import HostTrust, HostTrustStatus, StatusFeed
from trusted_launch.scheduler.security_profile_filter import SecurityProfileFilter

RANKS = {"low": 0, "medium": 1, "high": 2}
HIGH = aggregate(2, trusted_sp="high")
HOSTS = [host("h1", HIGH), host("h2", HIGH), host("h3", HIGH)]


def names(hosts) -> list[str]:
    return [h.host for h in hosts]


@pytest.fixture
def status(monkeypatch) -> HostTrustStatus:
    """The process's status cache, with no listener or puller behind it."""
    cache = HostTrustStatus(RANKS.get)
    feed = StatusFeed(cache)  # nothing to start: no transport, no pull
    monkeypatch.setattr(spf, "_FEED", feed)
    return cache


@pytest.fixture
def flt(trusted_conf, status) -> SecurityProfileFilter:
    trusted_conf(host_status_enabled=True)
    return SecurityProfileFilter()


def test_newer_status_wins_older_is_ignored(status):
    assert status.update("h1", "high", 100.0)
    assert status.update("h1", None, 200.0)
    assert not status.update("h1", "high", 150.0)
    assert status.get("h1") == HostTrust(None, None, 200.0)


def test_snapshot_is_never_mutated(status):
    status.update("h1", "high", 1.0)
    before = status.snapshot()
    status.update("h2", "low", 1.0)
    assert set(before) == {"h1"} and set(status.snapshot()) == {"h1", "h2"}


def test_unknown_profile_name_ranks_below_all(status):
    status.update("h1", "platinum", 1.0)
    assert status.get("h1").rank == -1


@pytest.mark.parametrize("payload", [
    None, [], {"host": "h1", "profile": "high"}, {"host": "", "profile": None, "time": 1},
    {"host": "h1", "profile": 3, "time": 1}, {"host": "h1", "profile": None, "time": True},
    {"host": "h1", "profile": None, "time": -5}])
def test_malformed_notifications_are_ignored(status, payload):
    assert not status.apply_notification(payload)
    assert status.snapshot() == {}


def test_listing_from_the_ttp(status):
    changed = status.apply_listing({"hosts": [
        {"host": "h1", "profile": "high", "checked_at": 5.0},
        {"host": "h2", "profile": None, "checked_at": 6},
        {"host": 7, "profile": None, "checked_at": 6}, "junk"]})
    assert changed == 2 and status.get("h2").profile is None
    with pytest.raises(ValueError, match="hosts"):
        status.apply_listing({"nothing": []})


def test_pull_failure_is_survived(status):
    def broken():
        raise ConnectionError("TTP down")
    assert StatusFeed(status, pull=broken).pull_once() == 0


def test_filter_refuses_host_whose_status_is_below_request(flt, status):
    status.apply_notification({"host": "h2", "profile": "medium", "time": time.time()})
    status.apply_notification({"host": "h3", "profile": None, "time": time.time()})
    spec = request_spec(hints={"trusted_sp": "high"})
    assert names(flt.filter_all(HOSTS, spec)) == ["h1"]  # h1: no status, aggregate decides
    spec = request_spec(hints={"trusted_sp": "medium"})
    assert names(flt.filter_all(HOSTS, spec)) == ["h1", "h2"]


def test_filter_readmits_host_when_status_recovers(flt, status):
    status.update("h1", None, 10.0)
    spec = request_spec(hints={"trusted_sp": "high"})
    assert names(flt.filter_all(HOSTS[:1], spec)) == []
    status.update("h1", "high", 11.0)
    assert names(flt.filter_all(HOSTS[:1], spec)) == ["h1"]


def test_status_never_lifts_a_host_above_its_aggregate(flt, status):
    low_host = host("l1", aggregate(0, trusted_sp="low"))
    status.update("l1", "high", time.time())
    assert flt.filter_all([low_host], request_spec(hints={"trusted_sp": "high"})) == []


def test_required_status_refuses_unknown_and_stale_hosts(flt, status, trusted_conf):
    trusted_conf(host_status_required=True, host_status_max_age=60)
    status.update("h1", "high", time.time())
    status.update("h2", "high", time.time() - 120)
    spec = request_spec(hints={"trusted_sp": "high"})
    assert names(flt.filter_all(HOSTS, spec)) == ["h1"]


def test_disabled_status_is_not_consulted(trusted_conf, status):
    status.update("h1", None, time.time())
    spec = request_spec(hints={"trusted_sp": "high"})
    assert names(SecurityProfileFilter().filter_all(HOSTS, spec)) == ["h1", "h2", "h3"]


def test_request_without_profile_ignores_status(flt, status):
    status.update("h1", None, time.time())
    assert flt.filter_all(HOSTS, request_spec()) == HOSTS
