"""The soak of bench/soak.py, bounded by a launch count: nothing fails, nothing leaks.

Same code as ``tox -e soak`` (real TTP process with two workers on PostgreSQL,
three swtpm hosts, six concurrent launchers, the API and continuous-attestation
threads), stopped after a fixed number of launches instead of minutes. Memory
growth is only judged by the minutes-long run; here: no error, every launch
audited, fds and TPM handles back to their post-warm-up baseline.
"""

from __future__ import annotations

import json
import pathlib

import pytest

from bench.soak import HOSTS, fds_leaked, run_soak
from trusted_launch.sandbox.databases import DatabaseUnavailable

pytestmark = [pytest.mark.swtpm, pytest.mark.postgres]

LAUNCHES = 400


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("soak") / "soak.json"
    try:
        figures = run_soak(minutes=None, launches=LAUNCHES, sample_s=1.0, out=out)
    except DatabaseUnavailable as exc:
        pytest.skip(str(exc))
    assert json.loads(pathlib.Path(out).read_text())["launches_ok"] == figures["launches_ok"]
    return figures


def test_every_launch_and_request_succeeds(report: dict) -> None:
    assert report["errors"] == 0, report["error_samples"]
    assert report["launches_ok"] == LAUNCHES + len(HOSTS)  # + one warm-up launch per host
    assert report["requests_served"] > 2 * report["launches_ok"]
    assert report["host_attestations"] >= len(HOSTS)


def test_every_trusted_launch_has_its_audit_record(report: dict) -> None:
    assert report["items_lost"] == 0


def test_file_descriptors_back_to_baseline(report: dict) -> None:
    assert fds_leaked(report["fds_before"], report["fds_after"]) == []
    assert report["fds_after"]["ttp_processes"] == report["fds_before"]["ttp_processes"]


def test_tpm_handles_back_to_the_pools_resident_baseline(report: dict) -> None:
    assert report["tpm_handles_after"] == report["tpm_handles_before"]
    for counts in report["tpm_handles_before"].values():
        assert counts == {"transient": 1, "loaded_sessions": 1}  # next key + spare session


def test_memory_was_sampled_for_every_process(report: dict) -> None:
    assert {"host_side", "ttp_master"} <= set(report["memory"])
    assert sum(role.startswith("ttp_worker_") for role in report["memory"]) == 2
    assert len(report["samples"]) >= 2
