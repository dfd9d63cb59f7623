"""The verifier's evidence cache never lets one request's verdict stand for another's.

Each test first gets a trusted decision (so the log's replay and verdict are
cached), then changes exactly one input and expects the refusal that input
deserves: a different log, a different certify signature, another AK, a
changed profile set. Real certify evidence from a swtpm (see test_verifier).
"""

from __future__ import annotations

import pytest

from tests.conftest import EVENTLOG_DIR
from tests.fixtures.swtpm import SwtpmProcess
from tests.unit.ttp import test_verifier as base
from tests.unit.ttp.test_verifier import (
    NOW,
    REQUIRED,
    b64,
    evidence,
    make_token,
    refused,
    verify,
)
from trusted_launch.crypto.token import key_id_for
from trusted_launch.evidence.tpm2 import parse_public
from trusted_launch.policy import ProfileSet, load_profile
from trusted_launch.ttp.verifier import (
    AttestationRequest,
    EvidenceCache,
    LaunchVerifier,
    profile_set_fingerprint,
)

pytestmark = pytest.mark.swtpm
host, ttp_key, profiles = base.host, base.ttp_key, base.profiles  # its module fixtures


@pytest.fixture(scope="module")
def other_ak(swtpm_state_cache):
    """The attestation key of a second, real swtpm (another host's AK)."""
    from trusted_launch.tpm.device import TPMDevice

    tpm = SwtpmProcess(swtpm_state_cache.state(1), swtpm_state_cache.ca)
    tpm.start()
    try:
        with TPMDevice(tpm.tcti) as device:
            yield parse_public(device.ensure_attestation_key().public)
    finally:
        tpm.stop()


@pytest.fixture
def cache() -> EvidenceCache:
    return EvidenceCache()


def cached_verifier(ttp_key, profile_set: ProfileSet, cache: EvidenceCache) -> LaunchVerifier:
    return LaunchVerifier(token_keys={key_id_for(ttp_key.public_key()): ttp_key},
                          profiles=profile_set, required_pcrs=REQUIRED, clock=lambda: NOW,
                          cache=cache)


def trusted(verifier, host, **fields):
    token, _ = make_token(ttp_key_of(verifier))
    decision = verify(verifier, host, evidence(host, token, **fields))
    assert decision.trusted, decision
    return decision


def ttp_key_of(verifier: LaunchVerifier):
    return next(iter(verifier._token_keys.values()))


def test_a_repeated_log_is_replayed_and_judged_once(ttp_key, profiles, host, cache):
    verifier = cached_verifier(ttp_key, profiles, cache)
    first, second = trusted(verifier, host), trusted(verifier, host)
    assert (len(cache.replays), len(cache.verdicts)) == (1, 1)
    assert first.satisfied_profile == second.satisfied_profile
    assert first.released != second.released  # every release is fresh


def test_a_different_log_is_not_judged_by_the_cached_verdict(ttp_key, profiles, host, cache):
    verifier = cached_verifier(ttp_key, profiles, cache)
    trusted(verifier, host)
    other_log = (EVENTLOG_DIR / "crypto_agile_eventlog").read_bytes()
    token, _ = make_token(ttp_key)
    decision = verify(verifier, host, evidence(host, token, event_log=b64(other_log)))
    assert "not locked to the boot state" in refused(decision, "bind_key_policy")
    assert len(cache.replays) == 2


def test_a_log_differing_in_one_byte_gets_its_own_entry(ttp_key, profiles, host, cache):
    verifier = cached_verifier(ttp_key, profiles, cache)
    trusted(verifier, host)
    altered = bytearray(host.event_log)
    altered[-1] ^= 0x01  # the last event's description, not an extended digest
    trusted(verifier, host, event_log=b64(bytes(altered)))
    assert len(cache.replays) == 2 and len(cache.verdicts) == 2


def test_a_bad_certify_signature_is_refused_after_a_cached_verdict(ttp_key, profiles, host,
                                                                    cache):
    verifier = cached_verifier(ttp_key, profiles, cache)
    trusted(verifier, host)
    token, _ = make_token(ttp_key)
    decision = verify(verifier, host, base.with_flipped_signature_bit(evidence(host, token)))
    refused(decision, "certify_signature")


def test_evidence_checked_against_another_ak_is_refused(ttp_key, profiles, host, cache,
                                                        other_ak):
    verifier = cached_verifier(ttp_key, profiles, cache)
    token, _ = make_token(ttp_key)
    request = AttestationRequest.from_json(evidence(host, token))
    assert verifier.verify(request, host.ak_public).trusted
    token, _ = make_token(ttp_key)
    request = AttestationRequest.from_json(evidence(host, token))
    refused(verifier.verify(request, other_ak), "certify_signature")


def test_a_changed_profile_set_judges_the_log_again(ttp_key, profiles, host, cache):
    trusted(cached_verifier(ttp_key, profiles, cache), host)
    medium = profiles.get("medium").to_document()
    medium["pcrs"] = {"sha256": {"0": ["00" * 32]}}  # the same name, now unmet
    changed = ProfileSet([load_profile(medium if p.name == "medium" else p.to_document())
                          for p in profiles if p.name != "high"])
    assert profile_set_fingerprint(changed) != profile_set_fingerprint(profiles)
    token, _ = make_token(ttp_key, profile="medium")
    decision = verify(cached_verifier(ttp_key, changed, cache), host, evidence(host, token))
    assert "PCR 0 (sha256)" in refused(decision, "profile_policy")
    assert len(cache.replays) == 1 and len(cache.verdicts) == 2
    assert trusted(cached_verifier(ttp_key, profiles, cache), host).satisfied_profile


def test_an_equal_profile_set_shares_the_verdict(ttp_key, profiles, host, cache):
    again = ProfileSet(load_profile(p.to_document()) for p in profiles)
    assert profile_set_fingerprint(again) == profile_set_fingerprint(profiles)
    trusted(cached_verifier(ttp_key, profiles, cache), host)
    trusted(cached_verifier(ttp_key, again, cache), host)
    assert len(cache.verdicts) == 1


def test_a_cached_refusal_is_repeated_with_its_reason(ttp_key, profiles, host, cache):
    verifier = cached_verifier(ttp_key, profiles, cache)
    truncated = b64(host.event_log[:-7])
    reasons = []
    for _ in range(2):
        token, _ = make_token(ttp_key)
        decision = verify(verifier, host, evidence(host, token, event_log=truncated))
        reasons.append(refused(decision, "event_log_malformed"))
    assert reasons[0] == reasons[1] and len(cache.replays) == 1


def test_the_cache_is_bounded(ttp_key, profiles, host):
    cache = EvidenceCache(logs=1, verdicts=1)
    verifier = cached_verifier(ttp_key, profiles, cache)
    trusted(verifier, host)
    token, _ = make_token(ttp_key)
    verify(verifier, host, evidence(host, token, event_log=b64(host.event_log[:-7])))
    assert (len(cache.replays), len(cache.verdicts)) == (1, 1)
    trusted(verifier, host)  # evicted, replayed again, still trusted


def test_a_disabled_cache_keeps_nothing(ttp_key, profiles, host):
    cache = EvidenceCache(logs=0, verdicts=0)
    trusted(cached_verifier(ttp_key, profiles, cache), host)
    assert (len(cache.replays), len(cache.verdicts)) == (0, 0)
