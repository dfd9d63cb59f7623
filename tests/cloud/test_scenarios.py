"""The trusted launch scenarios on the real cloud, one test each.

The scenarios run once per pytest run (launches run concurrently: guests
under TCG take tens of seconds to boot) through the real clients, exactly as
``trusted-launch demo --cloud`` runs them (the ``results`` fixture in
conftest.py); each test then checks one outcome and the check or fault that
names why, not just that something failed.
"""

from __future__ import annotations

import pytest

from trusted_launch.demo.report import ACCEPTED, REFUSED
from trusted_launch.sandbox.cloud.scenarios import SKIPPED

pytestmark = pytest.mark.timeout(2400)  # concurrent real-guest launches under TCG


def outcome(results: dict, name: str, expected: str):
    assert name in results, f"scenario {name} did not run (ran: {sorted(results)})"
    result = results[name]
    assert result.outcome == expected, f"{name}: {result.outcome}: {result.reason}"
    return result


def test_trusted_launch_accepted_on_the_high_host_and_guest_answers(results, cloud_target):
    result = outcome(results, "trusted_launch_accepted", ACCEPTED)
    transport = cloud_target.transport(cloud_target.high_host)
    assert f"ACTIVE on {cloud_target.high_host} (profile high; TTP over {transport})" in \
        result.reason
    assert "the guest answered the tenant's challenge" in result.reason
    assert result.steps_ms["to_answer"] >= result.steps_ms["to_active"]


def test_trusted_launch_accepted_on_the_low_host_over_its_transport(results, cloud_target):
    result = outcome(results, "trusted_launch_accepted_on_low_host", ACCEPTED)
    transport = cloud_target.transport(cloud_target.low_host)
    assert f"ACTIVE on {cloud_target.low_host} (profile low; TTP over {transport})" in \
        result.reason
    assert "the guest answered the tenant's challenge and verified its receipt" in result.reason
    assert "signature ok (key from config drive); verified: True" in result.reason


def test_the_two_computes_use_both_transports(cloud_target, cloud_report):
    transports = {cloud_target.transport(host) for host in (cloud_target.high_host,
                                                              cloud_target.low_host)}
    assert transports == {"https", "rpc"}, cloud_target.ttp_transports
    assert {host: entry["ttp_transport"] for host, entry in cloud_report["computes"].items()
            } == cloud_target.ttp_transports
    assert cloud_report["services"]["ttp-rpc"]["ready_s"] >= 0


def test_vm_challenge_verified_from_the_tenant_namespace(results, cloud_target):
    result = outcome(results, "vm_challenge_verified", ACCEPTED)
    assert f"from namespace {cloud_target.namespace}: guest proved N" in result.reason


def test_wrong_nonce_is_rejected_by_the_guest(results):
    result = outcome(results, "wrong_nonce_challenge_rejected", REFUSED)
    assert "does not prove knowledge of the launch nonce (MAC mismatch)" in result.reason


def test_low_host_never_chosen_for_profile_high(results, cloud_target):
    result = outcome(results, "lower_profile_host_never_chosen", REFUSED)
    assert f"all went to ['{cloud_target.high_host}']" in result.reason


def test_only_untrusted_host_refused_with_the_profile_check(results, cloud_target):
    result = outcome(results, "untrusted_host_refused", REFUSED)
    assert "trusted launch profile_policy: host does not meet profile 'high'" in result.reason


def test_image_bytes_differing_from_the_token_refused(results):
    result = outcome(results, "tampered_image_refused", REFUSED)
    assert "image_digest_mismatch" in result.reason


def test_encrypted_image_boots_on_the_attested_host(results, cloud_target):
    result = outcome(results, "encrypted_image_boots_on_attested_host", ACCEPTED)
    assert f"ACTIVE on {cloud_target.high_host}: the LUKS root disk opened" in result.reason


def test_encrypted_image_key_withheld_from_the_untrusted_host(results):
    result = outcome(results, "encrypted_image_key_withheld_from_untrusted_host", REFUSED)
    assert "trusted launch profile_policy" in result.reason


def test_plain_launch_unchanged(results):
    result = outcome(results, "plain_launch_unchanged", ACCEPTED)
    assert result.reason.startswith("no trusted properties: ACTIVE on ")
    assert "config drive off" in result.reason


def test_receipt_on_the_config_drive_checked_by_the_guest(results, cloud_target):
    result = outcome(results, "receipt_on_config_drive", ACCEPTED)
    assert f"receipt trusted for profile high on host {cloud_target.high_host}" in result.reason
    assert "bound to N: True" in result.reason
    # The guest checked the TTP's signature with the key the host put on the config drive.
    assert "signature ok (key from config drive); verified: True" in result.reason


@pytest.mark.parametrize("name", ["hard_reboot_reattests", "stop_start_reattests"])
def test_restarts_reattest_and_the_guest_keeps_n(results, name):
    result = outcome(results, name, ACCEPTED)
    assert "the host re-attested and the guest proved the same N" in result.reason


def test_cold_migration_reattests_on_the_destination(results, cloud_target):
    if cloud_target.migration_blocker:
        assert results["cold_migration_reattests"].outcome == SKIPPED
        pytest.skip(results["cold_migration_reattests"].reason)
    result = outcome(results, "cold_migration_reattests", ACCEPTED)
    hosts = {cloud_target.high_host, cloud_target.low_host}
    moved = [host for host in hosts if f"moved from {host} to " in result.reason]
    assert moved, result.reason
    assert "the destination re-attested and the guest proved the same N" in result.reason
