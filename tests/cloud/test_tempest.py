"""``tempest run --regex trusted_launch`` (the project's Tempest plugin) on the real cloud.

The workspace and tempest.conf come from
:mod:`trusted_launch.sandbox.cloud.tempest_conf`; tempest runs as a subprocess
from the cloud's venv (where the plugin is installed through its entry point)
and its subunit stream says how each test ended: every plugin test must have
run and passed, none skipped.

Part of ``tests/cloud``: about 4 minutes on a quiet machine (doc/tempest.md);
``TL_TEMPEST_TESTS=0`` leaves it out on purpose.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from trusted_launch.sandbox.cloud.tempest_conf import write_workspace
from trusted_launch.sandbox.cloud.tempest_results import counts, fixture_failures, statuses

pytestmark = [
    pytest.mark.timeout(3600),  # real guests under TCG, concurrency 2; a loaded machine
    pytest.mark.skipif(os.environ.get("TL_TEMPEST_TESTS") == "0",
                       reason="TL_TEMPEST_TESTS=0: the Tempest plugin run is left out"),
]
TEMPEST_TIMEOUT_S = 3300
PREFIX = "trusted_launch_tempest_plugin.tests.scenario.test_trusted_launch."
EXPECTED = (
    "TrustedBootTest.test_trusted_boot_accepted_and_verified_by_the_tenant",
    "TrustedBootTest.test_challenge_with_another_nonce_is_refused",
    "TrustedBootTest.test_hard_reboot_reattests_and_the_guest_proves_the_same_nonce",
    "WeakHostNeverChosenTest.test_host_that_does_not_meet_the_profile_is_never_chosen",
    "TamperedImageRefusedTest.test_image_that_does_not_match_the_token_is_refused",
    "EncryptedImageBootsTest.test_encrypted_image_boots_and_the_guest_proves_n",
)


@pytest.fixture(scope="module")
def plugin_run(cloud) -> dict[str, str]:
    """Each test's status in one ``tempest run --regex trusted_launch``."""
    workspace = write_workspace(cloud.paths)
    run = subprocess.run([cloud.paths.bin("tempest"), "run", "--regex", "trusted_launch",
                          "--concurrency", "2", "--subunit"], cwd=workspace,
                         capture_output=True, timeout=TEMPEST_TIMEOUT_S, check=False)
    (workspace / "plugin.subunit").write_bytes(run.stdout)
    results = statuses(run.stdout)
    assert results, f"tempest ran nothing (exit {run.returncode}): " \
                    f"{run.stderr.decode(errors='replace')[-3000:]}"
    return results


def test_every_plugin_test_ran_and_passed(plugin_run):
    assert fixture_failures(plugin_run) == []
    failed = {test: status for test, status in plugin_run.items() if status != "success"}
    assert failed == {}, "see .cloud/tempest/logs/tempest.log"
    assert counts(plugin_run)["success"] == len(EXPECTED)


@pytest.mark.parametrize("name", EXPECTED)
def test_plugin_test_ran_not_skipped(plugin_run, name):
    assert plugin_run.get(PREFIX + name) == "success", plugin_run
