"""Both host -> TTP transports carried an accepted launch on the real cloud.

Evidence from the TTP itself, not from the scenarios' own account: its audit
records (PostgreSQL ``attestations``: an RPC request's requester is
``rpc:<topic>``) of the trusted decisions made since the scenarios started,
and the log of the process that made each decision (``trusted-launch-ttp-rpc``
or the HTTPS ``trusted-launch-ttp``).
"""

from __future__ import annotations

import datetime

import pytest

from trusted_launch.sandbox.cloud import configs

pytestmark = pytest.mark.timeout(2400)


def trusted_decisions_since(started_at: datetime.datetime) -> list[tuple[str, str, str]]:
    """(attestation id, host, requester) of every trusted launch decision since then."""
    import psycopg2

    from trusted_launch.sandbox.databases import PG_ADMIN

    connection = psycopg2.connect(connect_timeout=5, **{**PG_ADMIN,
                                                        "dbname": configs.DB_PREFIX + "ttp"})
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT id, host, requester FROM attestations WHERE verdict = "
                           "'trusted' AND created_at >= %s", (started_at,))
            return list(cursor.fetchall())
    finally:
        connection.close()


def test_both_transports_carried_an_accepted_launch(scenario_run, cloud, cloud_target):
    decisions = trusted_decisions_since(
        datetime.datetime.fromisoformat(scenario_run["started_at"]))
    by_transport: dict[str, set[str]] = {"rpc": set(), "https": set()}
    logs = {"rpc": (cloud.paths.log / "ttp-rpc.log").read_text(errors="replace"),
            "https": (cloud.paths.log / "ttp.log").read_text(errors="replace")}
    for attestation_id, host, requester in decisions:
        transport = "rpc" if requester.startswith("rpc:") else "https"
        # Each host used only the transport its nova.conf names ...
        assert transport == cloud_target.transport(host), (host, requester)
        # ... and that transport's TTP process made the decision.
        assert f"attestation {attestation_id} trusted: host={host}" in logs[transport]
        other = "https" if transport == "rpc" else "rpc"
        assert attestation_id not in logs[other]
        by_transport[transport].add(host)
    assert by_transport == {"rpc": {cloud_target.low_host}, "https": {cloud_target.high_host}}, \
        f"trusted decisions since the scenarios started: {decisions}"
