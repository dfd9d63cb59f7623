"""The README's main job: ``trusted-launch demo --json`` keeps its contract."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
REQUIRED = {"trusted_launch_accepted", "lower_profile_host_never_chosen",
            "untrusted_host_refused", "tampered_image_refused", "ttp_unreachable_refused",
            "vm_challenge_verified", "wrong_nonce_challenge_rejected", "plain_launch_unchanged"}

pytestmark = [pytest.mark.swtpm, pytest.mark.nova]


def test_demo_json_reports_every_scenario_as_expected():
    command = [str(pathlib.Path(sys.executable).parent / "trusted-launch"), "demo", "--json"]
    finished = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900,
                              check=False)
    report = json.loads(finished.stdout)
    names = [s["name"] for s in report["scenarios"]]
    assert REQUIRED <= set(names), REQUIRED - set(names)
    for scenario in report["scenarios"]:
        assert set(scenario) >= {"name", "expected", "outcome", "reason", "duration_ms"}
        assert scenario["outcome"] in ("accepted", "refused")
        assert scenario["outcome"] == scenario["expected"], scenario
    assert report["all_as_expected"] is True
    assert finished.returncode == 0, finished.stderr[-2000:]
