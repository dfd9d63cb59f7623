"""Hypothesis fuzzing: hostile bytes give a typed result or an EvidenceError, nothing else."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import EVENTLOG_DIR
from trusted_launch.evidence.algorithms import HashAlg
from trusted_launch.evidence.errors import EvidenceError
from trusted_launch.evidence.tpm2 import (
    Attest,
    PCRSelection,
    PublicArea,
    Signature,
    load_go_attestation,
    marshal_pcr_selection,
    parse_attest,
    parse_pcr_selection,
    parse_public,
    parse_signature,
    policy_pcr_digest,
    verify_quote,
)

EVIDENCE = load_go_attestation(
    json.loads((EVENTLOG_DIR / "windows_gcp_shielded_vm_quote.json").read_text()))
FUZZ = settings(max_examples=200, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
QUICK = settings(FUZZ, max_examples=60)

PARSERS = {
    "attest": (lambda data: parse_attest(data), Attest),
    "attest2b": (lambda data: parse_attest(data, tpm2b=True), Attest),
    "signature": (parse_signature, Signature),
    "public2b": (lambda data: parse_public(data), PublicArea),
    "public": (lambda data: parse_public(data, tpm2b=False), PublicArea),
    "selection": (parse_pcr_selection, PCRSelection),
}


def _only_typed_or_evidence_error(name: str, data: bytes) -> None:
    parser, result_type = PARSERS[name]
    try:
        result = parser(data)
    except EvidenceError as exc:
        assert str(exc)   # every refusal says what is wrong
        return
    assert isinstance(result, result_type)


@FUZZ
@given(name=st.sampled_from(sorted(PARSERS)), data=st.binary(max_size=600))
def test_random_bytes(name, data):
    _only_typed_or_evidence_error(name, data)


@st.composite
def mutated(draw, original: bytes) -> bytes:
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        position = draw(st.integers(0, max(len(data) - 1, 0)))
        if action == "flip" and data:
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif action == "set" and data:
            data[position] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80]))
        elif action == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=8))
        elif action == "delete" and data:
            del data[position:position + draw(st.integers(1, 8))]
        elif action == "truncate":
            del data[position:]
    return bytes(data)


@FUZZ
@given(data=mutated(EVIDENCE.quote))
def test_mutated_quote(data):
    _only_typed_or_evidence_error("attest", data)
    try:
        verify_quote(EVIDENCE.ak_public, data, EVIDENCE.signature, EVIDENCE.pcr_values)
    except EvidenceError:
        return
    assert data == EVIDENCE.quote   # only the genuine quote may verify


@FUZZ
@given(data=mutated(EVIDENCE.signature))
def test_mutated_signature(data):
    _only_typed_or_evidence_error("signature", data)
    try:
        verify_quote(EVIDENCE.ak_public, EVIDENCE.quote, data, EVIDENCE.pcr_values)
    except EvidenceError:
        return
    assert data == EVIDENCE.signature


@FUZZ
@given(data=mutated(EVIDENCE.ak_public.raw))
def test_mutated_ak_public(data):
    _only_typed_or_evidence_error("public", data)


banks = st.dictionaries(st.sampled_from(list(HashAlg)),
                        st.lists(st.integers(0, 31), max_size=12), max_size=4)


@QUICK
@given(banks=banks)
def test_pcr_selection_round_trip(banks):
    selection = PCRSelection.of(banks)
    marshalled = marshal_pcr_selection(selection)
    assert parse_pcr_selection(marshalled) == selection
    assert parse_pcr_selection(marshalled).raw == marshalled


@QUICK
@given(banks=banks, seed=st.binary(min_size=1, max_size=8))
def test_policy_pcr_digest_depends_on_every_selected_value(banks, seed):
    selection = PCRSelection.of(banks)
    values = {alg: {i: alg.digest(seed + bytes([i])) for i in range(32)} for alg in banks}
    digest = policy_pcr_digest(selection, values)
    for alg, pcrs in selection:
        for index in pcrs[:2]:
            changed = {a: dict(v) for a, v in values.items()}
            changed[alg][index] = bytes(alg.digest_size)
            assert policy_pcr_digest(selection, changed) != digest
