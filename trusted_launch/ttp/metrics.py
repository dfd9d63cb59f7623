"""Prometheus metrics of the TTP: what it decided, how fast, and how its fleet stands.

Counters and histograms are kept per process by prometheus_client; under the
pre-forking server every worker writes them to files in one private
directory (``PROMETHEUS_MULTIPROC_DIR``, set by the server before any worker
starts) and ``GET /metrics`` adds up every worker's files. Fleet figures
(enrolled and trusted hosts, each host's last attestation) are read from the
database on each scrape, so every worker answers alike. Labels carry verdicts,
check names, cache names and host names only: never a token, a key, a nonce
or a free-text reason.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from trusted_launch.ttp.db.api import TTPDatabase
from trusted_launch.ttp.errors import APIError
from trusted_launch.ttp.host_status_store import HostStatusStore

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0)
_CHECK_NAME = re.compile(r"[a-z0-9_]{1,48}")
T = TypeVar("T")

ATTESTATIONS = Counter(
    "ttp_attestations",
    "Attestation decisions. kind: launch (POST /v1/attestations) or host (periodic "
    "quotes); verdict: trusted, refused (a check failed, 403), untrusted (a host's own "
    "evidence meets no profile), invalid (malformed request, 4xx) or error (5xx); "
    "check: the check that decided (none when trusted).",
    ["kind", "verdict", "check"])
ATTESTATION_SECONDS = Histogram(
    "ttp_attestation_duration_seconds",
    "Time the TTP spent on one attestation (parsing, verification, database), by kind.",
    ["kind"], buckets=LATENCY_BUCKETS)
CACHE_LOOKUPS = Counter(
    "ttp_cache_lookups",
    "Lookups in the TTP's caches, by cache (verifier_replays, verifier_verdicts, "
    "ak_identities: verified AK certificates and parsed AK public areas) and result "
    "(hit, miss).",
    ["cache", "result"])
HTTP_REQUESTS = Counter("ttp_http_requests", "HTTP requests answered, by status code.",
                        ["code"])
HTTP_SECONDS = Histogram(
    "ttp_http_request_duration_seconds",
    "Time from a request fully read to its response ready: waiting for an application "
    "slot plus the application.", buckets=LATENCY_BUCKETS)
CONNECTIONS = Counter("ttp_http_connections", "TCP connections accepted.")
CONNECTIONS_REFUSED = Counter(
    "ttp_http_connections_refused",
    "Connections closed on accept because a limit was reached (limit: per_address, total).",
    ["limit"])
DEADLINES = Counter(
    "ttp_http_deadline_closes",
    "Connections closed because a client missed a deadline (deadline: tls_handshake, "
    "header, body, response).", ["deadline"])
OPEN_CONNECTIONS = Gauge("ttp_http_open_connections", "Open client connections.",
                         multiprocess_mode="livesum")


def check_label(check: object) -> str:
    """A check name fit for a label; anything else (client-chosen text) becomes 'other'."""
    return check if isinstance(check, str) and _CHECK_NAME.fullmatch(check) else "other"


def launch_outcome(result: tuple[int, dict]) -> tuple[str, str]:
    """(verdict, check) of AttestationService.attest's (status, body)."""
    status, body = result
    if status == 200:
        return "trusted", "none"
    return "refused", check_label(body.get("error", {}).get("check"))


def host_outcome(body: dict) -> tuple[str, str]:
    """(verdict, check) of HostStatusService.attest's answer."""
    if body.get("trusted"):
        return "trusted", "none"
    return "untrusted", check_label(body.get("check"))


def observe_attestation(kind: str, run: Callable[[], T],
                        outcome: Callable[[T], tuple[str, str]]) -> T:
    """``run()``, counted by its verdict and check and timed; exceptions pass through."""
    started = time.perf_counter()
    try:
        result = run()
    except APIError as exc:
        verdict = "refused" if exc.status == 403 else "invalid" if exc.status < 500 \
            else "error"
        ATTESTATIONS.labels(kind, verdict, check_label(exc.check) if verdict == "refused"
                            else exc.code).inc()
        raise
    except Exception:
        ATTESTATIONS.labels(kind, "error", "internal").inc()
        raise
    finally:
        ATTESTATION_SECONDS.labels(kind).observe(time.perf_counter() - started)
    ATTESTATIONS.labels(kind, *outcome(result)).inc()
    return result


def cache_lookup(cache: str, hit: bool) -> None:
    """Count one lookup in the named cache."""
    CACHE_LOOKUPS.labels(cache, "hit" if hit else "miss").inc()


class FleetCollector(Collector):
    """Host counts and each host's last attestation, read from the database per scrape."""

    def __init__(self, db: TTPDatabase) -> None:
        self.db = db
        self.store = HostStatusStore(db)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        states = GaugeMetricFamily("ttp_hosts", "Enrolled hosts by enrollment state.",
                                   labels=["state"])
        for state, count in sorted(self.db.count_hosts_by_state().items()):
            states.add_metric([state], count)
        yield states
        attested = self.store.last_attested()
        by_profile: dict[str, int] = {}
        last = GaugeMetricFamily(
            "ttp_host_last_attested_timestamp_seconds",
            "Unix time of each host's latest accepted periodic quote (a host that stops "
            "attesting falls behind: alert on time() minus this).", labels=["host"])
        trusted = GaugeMetricFamily(
            "ttp_host_trusted", "1 if the host's latest periodic quote meets a security "
                                "profile, else 0.", labels=["host"])
        for row in attested:
            last.add_metric([row.host], row.checked_at)
            trusted.add_metric([row.host], 0 if row.profile is None else 1)
            by_profile[row.profile or "none"] = by_profile.get(row.profile or "none", 0) + 1
        profiles = GaugeMetricFamily(
            "ttp_hosts_trusted", "Hosts by the strongest profile their latest periodic "
                                 "quote meets (none: untrusted).", labels=["profile"])
        for profile, count in sorted(by_profile.items()):
            profiles.add_metric([profile], count)
        yield from (profiles, last, trusted)


def exposition(db: TTPDatabase) -> bytes:
    """The text exposition: every worker's counters (when pre-forked) and the fleet."""
    if os.environ.get(MULTIPROCESS_ENV):
        process = CollectorRegistry()
        multiprocess.MultiProcessCollector(process)
    else:
        process = REGISTRY
    fleet = CollectorRegistry()
    fleet.register(FleetCollector(db))
    return generate_latest(process) + generate_latest(fleet)
