"""Nova scheduler filter that keeps servers on hosts of a sufficient security profile."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

import nova.conf
from nova.scheduler import filters
from oslo_log import log as logging

from trusted_launch.conf import scheduler as scheduler_conf
from trusted_launch.crypto.api_token import read_api_token
from trusted_launch.scheduler import requirement
from trusted_launch.scheduler.host_status import (
    HostTrust,
    HostTrustStatus,
    StatusFeed,
    ttp_status_pull,
)
from trusted_launch.scheduler.levels import ProfileLevels, levels_for

LOG = logging.getLogger(__name__)
CONF = nova.conf.CONF
scheduler_conf.register_opts(CONF)

#: Rank of a host whose aggregate names a profile that is not configured.
UNKNOWN_PROFILE_RANK = -1
_UNSEEN = object()
_FEED: StatusFeed | None = None
_FEED_LOCK = threading.Lock()


def _configured_rank(name: str) -> int | None:
    return levels_for(tuple(CONF.trusted_launch.security_profiles)).rank(name)


def host_trust_status() -> HostTrustStatus:
    """This process's host status cache, its feed started on first use (after any fork)."""
    global _FEED
    feed = _FEED
    if feed is not None and feed.pid == os.getpid():
        return feed.status
    with _FEED_LOCK:
        if _FEED is None or _FEED.pid != os.getpid():
            _FEED = _make_feed()
            _FEED.start()
        return _FEED.status


def _make_feed() -> StatusFeed:
    group = CONF.trusted_launch
    pull = None
    if group.host_status_ttp_url:
        token_file = group.host_status_ttp_token_file
        pull = ttp_status_pull(group.host_status_ttp_url, ca_file=group.host_status_ttp_ca_file,
                               auth_token=read_api_token(token_file) if token_file else None)
    return StatusFeed(HostTrustStatus(_configured_rank),
                      transport_url=group.host_status_transport_url,
                      topics=group.host_status_topics,
                      pool=group.host_status_pool or
                      f"trusted-launch-scheduler-{socket.gethostname()}",
                      pull=pull, pull_interval=group.host_status_pull_interval, conf=CONF)


def _trust_allows(trust: HostTrust | None, rank: int, fresh_after: float | None) -> bool:
    """A known status below ``rank`` refuses; with ``fresh_after``, so does no current one."""
    if trust is None:
        return fresh_after is None
    if trust.rank is None or trust.rank < rank:
        return False
    return fresh_after is None or trust.as_of >= fresh_after


class SecurityProfileFilter(filters.BaseHostFilter):
    """Pass hosts whose security profile is at least the requested one.

    A host's profile is the aggregate metadata value under
    ``[trusted_launch] profile_aggregate_key`` (default ``trusted_sp``); in
    several aggregates with different profiles it counts as the weakest, and
    an unconfigured profile name counts as weaker than all. The requested
    profile is the strictest one named by the request's scheduler hint, flavor,
    image traits or server metadata (see :mod:`trusted_launch.scheduler.requirement`).

    * request without a profile: every host passes;
    * request for profile P: hosts whose profile is P or stricter pass; hosts
      in no profile aggregate do not;
    * request naming an unknown or malformed profile, or whose server metadata
      cannot be read: no host passes;
    * with ``host_status_enabled``: a host whose current status (the TTP's last
      judgement of its periodic quote, :mod:`trusted_launch.scheduler.host_status`)
      is below the request does not pass either, whatever its aggregate says.
    """

    # The requirement and aggregate membership are the same for every instance
    # of a multi-create request, and Nova hands later instances the hosts that
    # already passed, so filtering once per request is exact.
    run_filter_once_per_request = True

    # A rebuild may bring an image that asks for a stricter profile; the
    # current host must still satisfy it.
    RUN_ON_REBUILD = True

    def __init__(self) -> None:
        super().__init__()
        # A bad profile list stops nova-scheduler at start-up, not per request.
        self._levels()

    def filter_all(self, filter_obj_list: Iterable[Any], spec_obj: Any) -> list[Any]:
        """Hosts that satisfy the request, resolving the requirement once."""
        hosts = list(filter_obj_list)
        levels = self._levels()
        try:
            wanted = self._requirement(spec_obj, levels)
        except requirement.ProfileRequestError as exc:
            LOG.warning("SecurityProfileFilter: no host passes for instance %s: %s",
                        getattr(spec_obj, "instance_uuid", None), exc)
            return []
        if wanted is None:
            return hosts
        key = CONF.trusted_launch.profile_aggregate_key
        cache: dict[int, int | None] = {}
        passed = [host for host in hosts
                  if self._passes(self._host_rank(host, key, levels, cache), wanted)]
        if CONF.trusted_launch.host_status_enabled:
            passed = self._current_status_allows(passed, wanted, host_trust_status().snapshot())
        LOG.debug("SecurityProfileFilter: %d of %d hosts satisfy profile %s requested by %s",
                  len(passed), len(hosts), wanted.profile, ", ".join(wanted.sources))
        return passed

    def host_passes(self, host_state: Any, spec_obj: Any) -> bool:
        """True if this one host satisfies the request (resolves it per call)."""
        return bool(self.filter_all([host_state], spec_obj))

    @staticmethod
    def _current_status_allows(hosts: list[Any], wanted: requirement.Requirement,
                               statuses: Mapping[str, HostTrust]) -> list[Any]:
        """Drop hosts whose current status is below the request: one dict lookup each."""
        group = CONF.trusted_launch
        fresh_after = (time.time() - group.host_status_max_age
                       if group.host_status_required else None)
        rank = wanted.rank
        return [host for host in hosts
                if _trust_allows(statuses.get(host.host), rank, fresh_after)]

    @staticmethod
    def _levels() -> ProfileLevels:
        return levels_for(tuple(CONF.trusted_launch.security_profiles))

    @staticmethod
    def _requirement(spec_obj: Any, levels: ProfileLevels) -> requirement.Requirement | None:
        """The requested profile, None if none; raises ProfileRequestError."""
        reader = (requirement.read_server_metadata
                  if CONF.trusted_launch.profile_from_server_metadata else None)
        return requirement.resolve(spec_obj, levels, reader)

    @staticmethod
    def _passes(host_rank: int | None, wanted: requirement.Requirement) -> bool:
        return host_rank is not None and host_rank >= wanted.rank

    @staticmethod
    def _host_rank(host_state: Any, key: str, levels: ProfileLevels,
                   cache: dict[int, int | None]) -> int | None:
        """Weakest profile rank among the host's aggregates; None if it has none."""
        weakest: int | None = None
        for aggregate in host_state.aggregates:
            rank = cache.get(id(aggregate), _UNSEEN)
            if rank is _UNSEEN:
                rank = cache[id(aggregate)] = _aggregate_rank(aggregate, key, levels)
            if rank is not None and (weakest is None or rank < weakest):
                weakest = rank
        return weakest


def _aggregate_rank(aggregate: Any, key: str, levels: ProfileLevels) -> int | None:
    """Rank of the profile an aggregate's metadata names, None if it names none."""
    value = (aggregate.metadata or {}).get(key)
    if value is None:
        return None
    rank = levels.rank(value)
    return UNKNOWN_PROFILE_RANK if rank is None else rank
