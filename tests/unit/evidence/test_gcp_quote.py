"""The real GCP Shielded VM vTPM quote: verify it, and refuse every altered copy."""

from __future__ import annotations

import base64
import json

import pytest

from tests.conftest import EVENTLOG_DIR
from trusted_launch.cmd import cli
from trusted_launch.evidence.algorithms import HashAlg
from trusted_launch.evidence.errors import (
    EvidenceError,
    ParseError,
    PCRDigestMismatch,
    SignatureInvalid,
    VerificationError,
)
from trusted_launch.evidence.tpm2 import (
    AttestType,
    CreationInfo,
    PCRSelection,
    QuoteInfo,
    load_go_attestation,
    parse_attest,
    parse_public,
    parse_signature,
    pcr_digest,
    verify_quote,
    verify_signature,
    with_initial_values,
)

QUOTE_FILE = EVENTLOG_DIR / "windows_gcp_shielded_vm_quote.json"
LOG_FILE = EVENTLOG_DIR / "windows_gcp_shielded_vm_eventlog"


@pytest.fixture(scope="module")
def document() -> dict:
    return json.loads(QUOTE_FILE.read_text())


@pytest.fixture(scope="module")
def evidence(document):
    return load_go_attestation(document)


def test_quote_verifies_against_file_pcrs(evidence):
    attest = verify_quote(evidence.ak_public, evidence.quote, evidence.signature,
                          evidence.pcr_values, nonce=evidence.nonce)
    assert attest.type is AttestType.QUOTE and attest.extra_data == b""
    info = attest.attested
    assert isinstance(info, QuoteInfo)
    assert info.pcr_select == PCRSelection.of({HashAlg.SHA1: range(24)})
    assert info.pcr_digest.hex() == "a610f27bc687ce906243287d832706036e79f6e1"
    signature = parse_signature(evidence.signature)
    assert (signature.algorithm.name, signature.hash_alg) == ("RSASSA", HashAlg.SHA1)


def test_ak_public_and_creation_attestation(document, evidence):
    ak = evidence.ak_public
    assert ak.parameters.key_bits == 2048 and ak.parameters.scheme.hash_alg is HashAlg.SHA1
    assert ak.name.hex().startswith("000b4ce9b151")
    create = base64.b64decode(document["AK"]["CreateAttestation"])
    verify_signature(ak, create, parse_signature(
        base64.b64decode(document["AK"]["CreateSignature"])))
    creation = parse_attest(create)
    assert isinstance(creation.attested, CreationInfo)
    assert creation.attested.object_name == ak.name   # the AK certified its own creation
    quote = parse_attest(evidence.quote)
    assert quote.qualified_signer == creation.qualified_signer
    assert quote.clock_info.reset_count == creation.clock_info.reset_count
    assert quote.clock_info.clock > creation.clock_info.clock


def test_wrong_nonce_and_wrong_pcr_are_refused(evidence):
    with pytest.raises(VerificationError, match="extraData"):
        verify_quote(evidence.ak_public, evidence.quote, evidence.signature,
                     evidence.pcr_values, nonce=b"\x00" * 32)
    for index in (0, 10, 23):
        values = {HashAlg.SHA1: dict(evidence.pcr_values[HashAlg.SHA1])}
        values[HashAlg.SHA1][index] = b"\x01" * 20
        with pytest.raises(PCRDigestMismatch):
            verify_quote(evidence.ak_public, evidence.quote, evidence.signature, values)


def _mutations(data: bytes):
    for position in range(len(data)):
        for flip in (0x01, 0x80):
            changed = bytearray(data)
            changed[position] ^= flip
            yield position, bytes(changed)


def test_every_quote_byte_change_is_refused(evidence):
    checked = 0
    for _position, quote in _mutations(evidence.quote):
        with pytest.raises((SignatureInvalid, ParseError, VerificationError)):
            verify_quote(evidence.ak_public, quote, evidence.signature, evidence.pcr_values)
        checked += 1
    assert checked == 2 * len(evidence.quote)


def test_every_signature_byte_change_is_refused(evidence):
    for _, signature in _mutations(evidence.signature):
        with pytest.raises((SignatureInvalid, ParseError, VerificationError)):
            verify_quote(evidence.ak_public, evidence.quote, signature, evidence.pcr_values)


def test_sampled_ak_public_changes_are_refused_or_change_the_name(evidence):
    """A changed key is refused; a changed attribute or policy gives the AK another Name.

    The signature covers only the key, so flipping e.g. stClear or an authPolicy
    byte still verifies: what catches it is the Name, which the AK certificate binds.
    """
    raw = evidence.ak_public.raw
    original = evidence.ak_public.public_key().public_numbers()
    refused = renamed = 0
    for position in list(range(0, 60)) + list(range(60, len(raw), 7)):
        changed = bytearray(raw)
        changed[position] ^= 0x01
        try:
            ak = parse_public(bytes(changed), tpm2b=False)
            verify_quote(ak, evidence.quote, evidence.signature, evidence.pcr_values)
        except EvidenceError:
            refused += 1
            continue
        assert ak.name != evidence.ak_public.name
        assert ak.public_key().public_numbers() == original
        assert position < 60   # only header fields, never the modulus
        renamed += 1
    assert refused > 40 and renamed > 0


def _replayed_values(log: bytes, selection: PCRSelection):
    from trusted_launch.evidence.eventlog import replay_event_log

    return with_initial_values(selection, replay_event_log(log))


def test_quote_verifies_against_replayed_event_log(evidence, expected_pcrs):
    pytest.importorskip("trusted_launch.evidence.eventlog")
    log = LOG_FILE.read_bytes()
    assert log == evidence.event_log   # the file embeds the same log
    selection = parse_attest(evidence.quote).attested.pcr_select
    replayed = _replayed_values(log, selection)
    assert replayed[HashAlg.SHA1] == evidence.pcr_values[HashAlg.SHA1]
    expected = expected_pcrs["windows_gcp_shielded_vm_eventlog"]["sha1"]
    assert {str(i): replayed[HashAlg.SHA1][i].hex() for i in map(int, expected)} == expected
    verify_quote(evidence.ak_public, evidence.quote, evidence.signature, replayed,
                 nonce=b"")


def test_changed_event_log_fails_the_pcr_digest(evidence):
    pytest.importorskip("trusted_launch.evidence.eventlog")
    from trusted_launch.evidence.eventlog import parse_event_log

    log = LOG_FILE.read_bytes()
    events = parse_event_log(log).events
    selection = parse_attest(evidence.quote).attested.pcr_select
    quoted = parse_attest(evidence.quote).attested.pcr_digest
    refused = 0
    # Flip one byte inside a sample of measured digests: the log still parses,
    # replays to other PCR values, and the quote's digest no longer matches.
    for position in _digest_positions(log, events)[::5]:
        changed = bytearray(log)
        changed[position] ^= 0x01
        values = _replayed_values(bytes(changed), selection)
        assert pcr_digest(selection, values, HashAlg.SHA1) != quoted
        with pytest.raises(PCRDigestMismatch):
            verify_quote(evidence.ak_public, evidence.quote, evidence.signature, values)
        refused += 1
    assert refused >= 5


def _digest_positions(log: bytes, events) -> list[int]:
    """Byte offsets of SHA1 event digests of measured events (legacy log layout)."""
    positions = []
    for event in events:
        digest = event.digests.get(HashAlg.SHA1)
        if event.event_type == 3 or digest is None:   # EV_NO_ACTION is not extended
            continue
        offset = log.find(digest)
        if offset >= 0:
            positions.append(offset)
    return positions


# ---------------------------------------------------------------- the CLI

def test_cli_verifies_quote_and_eventlog(capsys):
    code = cli.main(["quote", "verify", str(QUOTE_FILE), "--eventlog", str(LOG_FILE)])
    out = capsys.readouterr().out
    assert code == 0
    assert "quote verified: RSASSA-sha1" in out and "replays to the quoted digest" in out
    assert "8 PCRs extended by the log, 16 at their initial value" in out


def test_cli_json_output(capsys):
    assert cli.main(["quote", "verify", str(QUOTE_FILE), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["verdict"] == "verified"
    assert report["pcr_digest"] == "a610f27bc687ce906243287d832706036e79f6e1"
    assert "eventlog" not in report


@pytest.mark.parametrize("change", ["nonce", "pcr", "signature", "log", "json"])
def test_cli_refuses_with_one_line(tmp_path, document, capsys, change):
    changed = json.loads(json.dumps(document))
    args = []
    if change == "nonce":
        changed["Quote"]["Nonce"] = base64.b64encode(b"other nonce").decode()
    elif change == "pcr":
        changed["Log"]["PCRs"][0]["Digest"] = base64.b64encode(bytes(20)).decode()
    elif change == "signature":
        sig = bytearray(base64.b64decode(changed["Quote"]["Signature"]))
        sig[100] ^= 1
        changed["Quote"]["Signature"] = base64.b64encode(sig).decode()
    elif change == "log":
        log = bytearray(LOG_FILE.read_bytes())
        log[_digest_positions(bytes(log), _events(bytes(log)))[0]] ^= 1
        (tmp_path / "log").write_bytes(log)
        args = ["--eventlog", str(tmp_path / "log")]
    else:
        del changed["Quote"]
    path = tmp_path / "quote.json"
    path.write_text(json.dumps(changed))
    assert cli.main(["quote", "verify", str(path), *args]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith("trusted-launch quote: error: ")


def _events(log: bytes):
    from trusted_launch.evidence.eventlog import parse_event_log

    return parse_event_log(log).events
