"""Judging real firmware event logs against security profiles."""

from __future__ import annotations

import dataclasses
import pathlib

import pytest

from tests.conftest import EVENTLOG_DIR
from trusted_launch.evidence.algorithms import HashAlg
from trusted_launch.evidence.eventlog import parse_event_log, replay
from trusted_launch.policy import (
    ProfileSet,
    UnknownProfile,
    evaluate,
    evaluate_for_request,
    load_profile,
)
from trusted_launch.policy.evaluate import MAX_FINDINGS

EXAMPLES = pathlib.Path(__file__).parents[3] / "examples" / "profiles"
SHIM = "27b12463e599b3147635f272e3722960e443def60fef088eba600697017529f2"


def load_log(name: str):
    log = parse_event_log((EVENTLOG_DIR / name).read_bytes())
    return log, replay(log)


@pytest.fixture(scope="module")
def examples() -> ProfileSet:
    return ProfileSet(load_profile((EXAMPLES / f"{name}.yaml").read_text())
                      for name in ("low", "medium", "high"))


@pytest.fixture(scope="module")
def secureboot():
    return load_log("secureboot_binary_bios_measurements")


@pytest.fixture(scope="module")
def coreos():
    return load_log("coreos_36_shielded_vm_no_secure_boot_eventlog")


def with_doc(profile, **changes):
    document = profile.to_document()
    document.update(changes)
    return load_profile(document)


@pytest.mark.parametrize("name", ["low", "medium", "high"])
def test_reference_host_passes_every_example_profile(examples, secureboot, name):
    verdict = evaluate(examples.get(name), *secureboot)
    assert verdict.passed and verdict.findings == () and verdict.profile == name
    assert verdict.summary() == "passed"


def test_host_without_secure_boot_fails_high(examples, coreos):
    verdict = evaluate(examples.get("high"), *coreos)
    assert not verdict.passed
    checks = {f.check for f in verdict.findings}
    assert "secure_boot" in checks and "pcr_value" in checks and "event_digest" in checks
    sb = next(f for f in verdict.findings if f.check == "secure_boot")
    assert "Secure Boot is disabled" in sb.reason


def test_pcr_finding_names_pcr_bank_and_value(examples, coreos):
    log, pcrs = coreos
    verdict = evaluate(examples.get("medium"), log, pcrs)
    reasons = [f.reason for f in verdict.findings if f.check == "pcr_value"]
    # PCR 3 and 6 hold only a separator on both hosts, so they match
    assert [int(r.split()[1]) for r in reasons] == [0, 1, 2, 4, 5, 7]
    assert reasons[0] == (f"PCR 0 (sha256) value {pcrs[HashAlg.SHA256][0].hex()} is not one "
                          "of the profile's 1 allowed value(s)")


def test_unknown_boot_loader_is_named_with_event_index_and_digest(examples, secureboot):
    high = examples.get("high")
    allowed = high.to_document()["event_digests"]
    allowed["sha256"]["4"].remove(SHIM)
    verdict = evaluate(with_doc(high, event_digests=allowed), *secureboot)
    assert [f.reason for f in verdict.findings] == [
        f"PCR 4 (sha256) event 29 EV_EFI_BOOT_SERVICES_APPLICATION digest {SHIM} is not in "
        "the profile's allowlist"]
    assert verdict.findings[0].check == "event_digest"


def test_empty_allowlist_forbids_any_event_in_that_pcr(examples, secureboot):
    verdict = evaluate(with_doc(examples.get("low"), event_digests={"sha256": {"5": []}}),
                       *secureboot)
    assert {f.check for f in verdict.findings} == {"event_digest"}
    assert [f.reason.split(" digest")[0] for f in verdict.findings] == [
        "PCR 5 (sha256) event 25 EV_SEPARATOR", "PCR 5 (sha256) event 28 EV_EFI_GPT_EVENT",
        "PCR 5 (sha256) event 97 EV_EFI_ACTION", "PCR 5 (sha256) event 98 EV_EFI_ACTION"]


def test_allowlisted_bank_missing_from_log(examples, secureboot):
    profile = with_doc(examples.get("low"), event_digests={"sha1": {"0": ["00" * 20]}})
    verdict = evaluate(profile, *secureboot)
    assert not verdict.passed
    assert "has no sha1 digest" in verdict.findings[0].reason


def test_pinned_pcr_without_value(examples, secureboot):
    profile = with_doc(examples.get("low"), pcrs={"sha256": {"23": ["00" * 32]}})
    verdict = evaluate(profile, *secureboot)
    assert [f.reason for f in verdict.findings] == [
        "PCR 23 (sha256) has no value in the evidence; the profile pins it"]


def test_forbidden_event_types(examples, secureboot):
    profile = with_doc(examples.get("low"), forbid_event_types=["EV_EFI_GPT_EVENT"])
    verdict = evaluate(profile, *secureboot)
    assert [(f.check, f.reason) for f in verdict.findings] == [
        ("forbidden_event", "PCR 5 event 28 EV_EFI_GPT_EVENT is forbidden by the profile")]


def test_log_without_secure_boot_variable(examples):
    log, pcrs = load_log("short_no_action_eventlog")
    verdict = evaluate(with_doc(examples.get("low"), require_secure_boot=True), log, pcrs)
    assert [f.check for f in verdict.findings] == ["secure_boot"]
    assert "does not record the SecureBoot variable" in verdict.findings[0].reason


def test_secure_boot_data_forged_next_to_the_real_digest(examples):
    """A host flips SecureBoot's data byte to 1 but keeps the measured digest of 0."""
    raw = bytearray((EVENTLOG_DIR / "coreos_36_shielded_vm_no_secure_boot_eventlog").read_bytes())
    name = "SecureBoot".encode("utf-16-le")
    position = raw.index(name) + len(name)
    assert raw[position] == 0
    raw[position] = 1
    log = parse_event_log(bytes(raw))
    verdict = evaluate(with_doc(examples.get("low"), require_secure_boot=True), log, replay(log))
    assert not verdict.passed
    assert all(f.check == "secure_boot" for f in verdict.findings)
    assert "SecureBoot variable data does not match its measured digest" in \
        verdict.findings[0].reason


def test_findings_are_bounded(examples):
    log, pcrs = load_log("fedora41_uefi_binary_bios_measurements")
    nothing = {str(pcr): [] for pcr in range(24)}
    profile = with_doc(examples.get("low"), event_digests={"sha1": nothing, "sha256": nothing})
    verdict = evaluate(profile, log, pcrs)
    assert len(verdict.findings) == MAX_FINDINGS + 1
    assert verdict.findings[-1].check == "findings_truncated"
    assert verdict.summary(limit=2).endswith(f"and {MAX_FINDINGS - 1} more finding(s)")


@dataclasses.dataclass(frozen=True)
class Measurement:
    path: str
    file_digest: bytes


def test_ima_section_requires_measurements(examples, secureboot):
    ima = {"require_fresh_quote": True, "allowlist": {"/usr/bin/bash": ["aa" * 32]}}
    profile = with_doc(examples.get("low"), ima=ima)
    verdict = evaluate(profile, *secureboot)
    assert [f.check for f in verdict.findings] == ["ima"]
    good = [Measurement("boot_aggregate", b"\x01" * 32),
            Measurement("/usr/bin/bash", b"\xaa" * 32)]
    assert evaluate(profile, *secureboot, ima_measurements=good).passed
    bad = [*good, Measurement("/usr/bin/bash", b"\xbb" * 32), Measurement("/tmp/x", b"\0" * 32)]
    verdict = evaluate(profile, *secureboot, ima_measurements=bad)
    assert [f.reason for f in verdict.findings] == [
        f"IMA entry 2 file '/usr/bin/bash' digest {'bb' * 32} is not allowed",
        "IMA entry 3 file '/tmp/x' is not in the profile's allowlist"]


def test_request_is_satisfied_by_the_strictest_passing_profile(examples, secureboot, coreos):
    assert evaluate_for_request(examples, "low", *secureboot)[1] == "high"
    assert evaluate_for_request(examples, "medium", *secureboot)[1] == "high"
    verdict, satisfied = evaluate_for_request(examples, "low", *coreos)
    assert verdict.passed and satisfied == "low"


def test_refused_request_reports_the_requested_profiles_findings(examples, coreos):
    verdict, satisfied = evaluate_for_request(examples, "medium", *coreos)
    assert satisfied is None and not verdict.passed and verdict.profile == "medium"
    assert verdict.findings[0].check == "pcr_value"


def test_weaker_profile_does_not_satisfy_a_stricter_request(examples, secureboot):
    log, pcrs = secureboot
    broken = {HashAlg.SHA256: {**pcrs[HashAlg.SHA256], 0: b"\0" * 32}}
    _verdict, satisfied = evaluate_for_request(examples, "medium", log, broken)
    assert satisfied is None
    assert evaluate_for_request(examples, "low", log, broken)[1] == "low"


def test_unknown_requested_profile(examples, secureboot):
    with pytest.raises(UnknownProfile):
        evaluate_for_request(examples, "ultra", *secureboot)
