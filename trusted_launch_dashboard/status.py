"""Trust status derived from what Nova and the TTP expose (pure; no Django, no I/O).

A tenant's instance: its metadata says whether a trusted launch was asked
(``trusted_token``, ``trusted_sp``, ``trusted_ttp``), its status and fault say
whether the TTP's verdict let it start, its instance actions say when it last
started again (each start re-attests). A compute host: the TTP's current
status (``GET /v1/hosts?status=1``) against the aggregate's ``trusted_sp``.
None of this needs N; the receipt's fields do (doc/dashboard.md).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from trusted_launch.crypto.errors import CryptoError
from trusted_launch.crypto.token import token_digest

TOKEN_KEY = "trusted_token"  # noqa: S105 - a metadata key, not a secret
TTP_KEY = "trusted_ttp"
PROFILE_KEY = "trusted_sp"

ACCEPTED, REFUSED, PENDING, PLAIN = "accepted", "refused", "pending", "plain"
TRUSTED, UNTRUSTED, STALE, NEVER = "trusted", "untrusted", "stale", "never attested"
# Server states a guest reaches only after its host got N from the TTP.
STARTED_STATES = frozenset({"ACTIVE", "SHUTOFF", "PAUSED", "SUSPENDED", "RESCUE",
                            "VERIFY_RESIZE", "SHELVED", "SHELVED_OFFLOADED"})
# Instance actions after which the guest started again, so its host re-attested.
REATTESTING_ACTIONS = frozenset({"reboot", "start", "resume", "unpause", "rebuild", "resize",
                                 "migrate", "live-migration", "evacuate", "unshelve"})
SHORT_DIGEST = 16


@dataclass(frozen=True)
class InstanceTrust:
    """One instance's trust status as the tenant's panel shows it."""

    server_id: str
    name: str
    server_status: str
    requested_profile: str | None
    verdict: str
    reason: str = ""
    host_level: str = ""
    token_digest: str = ""           # hex SHA-256 of the decoded token ("" if none/invalid)
    ttp_url: str = ""
    last_attested_at: str = ""       # ISO time of the launch or of the latest re-attesting start

    @property
    def trusted_launch(self) -> bool:
        return self.verdict != PLAIN


def launch_token_digest(token: object) -> str:
    """Hex SHA-256 of a launch token as stored in metadata, "" if it is not a token."""
    if not isinstance(token, str):
        return ""
    try:
        return token_digest(token).hex()
    except (CryptoError, ValueError):
        return ""


def last_attestation_time(created: str, actions: Iterable[Mapping]) -> str:
    """The launch time or the start time of the latest successful re-attesting action."""
    times = [str(action.get("start_time") or "") for action in actions
             if action.get("action") in REATTESTING_ACTIONS and not action.get("message")]
    times = [moment for moment in times if moment]
    return max(times) if times else created


def instance_trust(server: Mapping, actions: Sequence[Mapping] = ()) -> InstanceTrust:
    """Derive an instance's trust status from the server (as Nova shows it) and its actions."""
    metadata = server.get("metadata") or {}
    status = str(server.get("status") or "")
    base = {"server_id": str(server.get("id") or ""), "name": str(server.get("name") or ""),
            "server_status": status}
    token = metadata.get(TOKEN_KEY)
    if not token:
        return InstanceTrust(**base, requested_profile=None, verdict=PLAIN,
                             reason="no launch token: not a trusted launch")
    profile = metadata.get(PROFILE_KEY) or None
    digest = launch_token_digest(token)
    fault = (server.get("fault") or {}).get("message") or ""
    common = {**base, "requested_profile": profile, "token_digest": digest,
              "ttp_url": str(metadata.get(TTP_KEY) or "")}
    if not digest:
        return InstanceTrust(**common, verdict=REFUSED,
                             reason="the trusted_token metadata is not a launch token")
    if status == "ERROR" or (fault and status not in ("ACTIVE", "BUILD")):
        return InstanceTrust(**common, verdict=REFUSED, reason=fault or "no fault recorded")
    if status in STARTED_STATES:
        level = f"meets {profile} or stricter" if profile else "accepted by the TTP"
        return InstanceTrust(**common, verdict=ACCEPTED, host_level=level,
                             last_attested_at=last_attestation_time(
                                 str(server.get("created") or ""), actions))
    return InstanceTrust(**common, verdict=PENDING, reason=f"server is {status or 'unknown'}")


@dataclass(frozen=True)
class HostTrust:
    """One compute host's attestation status as the admin's panel shows it."""

    host: str
    aggregate_profile: str | None    # trusted_sp of its aggregate (what the scheduler assumes)
    state: str                       # trusted / untrusted / stale / never attested
    profile_met: str | None          # the strongest profile the TTP found it meets
    since: str                       # ISO time of the TTP's latest judgement
    reason: str
    meets_aggregate: bool            # current and at least its aggregate's profile


def _level(levels: Mapping[str, int], profile: str | None) -> int:
    return levels.get(profile, -1) if profile else -1


def host_trust(host: str, aggregate_profile: str | None, record: Mapping | None,
               levels: Mapping[str, int], now: float, max_age: float) -> HostTrust:
    """A host's state from its TTP status record (None: the TTP never judged it)."""
    if record is None:
        return HostTrust(host, aggregate_profile, NEVER, None, "", "the TTP has no periodic "
                         "quote from this host", False)
    profile = record.get("profile") or None
    since = str(record.get("last_attested_at") or "")
    checked_at = float(record.get("checked_at") or 0.0)
    if profile is None:
        reason = ": ".join(part for part in (record.get("check"), record.get("reason")) if part)
        return HostTrust(host, aggregate_profile, UNTRUSTED, None, since,
                         reason or "meets no profile", False)
    age = now - checked_at
    if age > max_age:
        return HostTrust(host, aggregate_profile, STALE, profile, since,
                         f"last judged {age:.0f} s ago, more than {max_age:g} s", False)
    if aggregate_profile and aggregate_profile not in levels:
        return HostTrust(host, aggregate_profile, TRUSTED, profile, since,
                         f"its aggregate's profile {aggregate_profile} is unknown to the TTP",
                         False)
    meets = _level(levels, profile) >= _level(levels, aggregate_profile)
    reason = "" if meets else f"meets {profile}, below its aggregate's {aggregate_profile}"
    return HostTrust(host, aggregate_profile, TRUSTED, profile, since, reason, meets)


def hosts_trust(aggregates: Mapping[str, str], records: Iterable[Mapping],
                levels: Mapping[str, int], now: float | None = None,
                max_age: float = 300.0) -> list[HostTrust]:
    """Every host an aggregate names or the TTP judged, strongest aggregate profile first."""
    by_host = {str(record.get("host")): record for record in records}
    names = sorted(set(aggregates) | set(by_host))
    moment = time.time() if now is None else now
    rows = [host_trust(name, aggregates.get(name), by_host.get(name), levels, moment, max_age)
            for name in names]
    return sorted(rows, key=lambda row: (-_level(levels, row.aggregate_profile), row.host))


def profile_counts(rows: Iterable[HostTrust], levels: Mapping[str, int]
                   ) -> list[tuple[str, int, int]]:
    """Per profile, weakest first: (profile, hosts currently meeting it, other hosts)."""
    rows = list(rows)
    counts = []
    for profile in sorted(levels, key=levels.__getitem__):
        meeting = sum(1 for row in rows if row.state == TRUSTED
                      and _level(levels, row.profile_met) >= levels[profile])
        counts.append((profile, meeting, len(rows) - meeting))
    return counts


def aggregate_profiles(aggregates: Iterable[Mapping], levels: Mapping[str, int]
                       ) -> dict[str, str]:
    """host -> the strongest ``trusted_sp`` of the aggregates it is in (Nova's view)."""
    result: dict[str, str] = {}
    for aggregate in aggregates:
        profile = (aggregate.get("metadata") or {}).get(PROFILE_KEY)
        if not profile:
            continue
        for host in aggregate.get("hosts") or []:
            if host not in result or _level(levels, profile) > _level(levels, result[host]):
                result[host] = profile
    return result


def short(digest: str) -> str:
    """The first hex digits of a digest, as nonce files are named."""
    return digest[:SHORT_DIGEST]
