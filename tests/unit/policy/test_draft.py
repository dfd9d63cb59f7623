"""Drafting profiles from known-good hosts' real event logs."""

from __future__ import annotations

import pytest

from tests.conftest import EVENTLOG_DIR
from trusted_launch.evidence.algorithms import HashAlg
from trusted_launch.evidence.eventlog import parse_event_log, replay
from trusted_launch.policy import PolicyError, draft_profile, evaluate, load_profile

LOGS = ["secureboot_binary_bios_measurements", "fedora41_uefi_binary_bios_measurements",
        "coreos_36_shielded_vm_no_secure_boot_eventlog", "windows_gcp_shielded_vm_eventlog",
        "sb_cert_eventlog"]


def load_log(name: str):
    log = parse_event_log((EVENTLOG_DIR / name).read_bytes())
    return log, replay(log)


@pytest.mark.parametrize("name", LOGS)
def test_drafted_profile_is_valid_and_passes_its_own_host(name):
    log, pcrs = load_log(name)
    document = draft_profile("drafted", 40, log, pcrs)
    profile = load_profile(document)
    assert evaluate(profile, log, pcrs).passed
    bank = HashAlg.SHA256 if HashAlg.SHA256 in pcrs else HashAlg.SHA1
    assert set(document["pcrs"]) == {bank.bank_name}
    assert document["pcrs"][bank.bank_name]["0"] == [pcrs[bank][0].hex()]
    assert set(map(int, document["event_digests"][bank.bank_name])) <= set(range(8))


@pytest.mark.parametrize("name", LOGS[1:])
def test_drafted_profile_refuses_a_different_host(name):
    reference, reference_pcrs = load_log("secureboot_binary_bios_measurements")
    profile = load_profile(draft_profile("drafted", 40, reference, reference_pcrs))
    verdict = evaluate(profile, *load_log(name))
    assert not verdict.passed and verdict.findings


def test_secure_boot_state_is_drafted_as_observed():
    on = draft_profile("a", 1, *load_log("secureboot_binary_bios_measurements"))
    off = draft_profile("a", 1, *load_log("coreos_36_shielded_vm_no_secure_boot_eventlog"))
    assert on["require_secure_boot"] is True and off["require_secure_boot"] is False


def test_pcr_indexes_and_banks_are_honoured():
    log, pcrs = load_log("fedora41_uefi_binary_bios_measurements")
    document = draft_profile("a", 1, log, pcrs, pcr_indexes=[4, 7],
                             banks=[HashAlg.SHA1, HashAlg.SHA256], description="x")
    assert document["description"] == "x"
    for bank in ("sha1", "sha256"):
        assert set(document["pcrs"][bank]) == {"4", "7"}
        assert set(document["event_digests"][bank]) == {"4", "7"}
    assert evaluate(load_profile(document), log, pcrs).passed


def test_invalid_name_is_rejected():
    with pytest.raises(PolicyError, match=r"^name: "):
        draft_profile("Bad Name", 1, *load_log("secureboot_binary_bios_measurements"))
