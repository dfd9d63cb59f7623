"""Demo stage 1: real firmware event logs replayed, a real vTPM quote verified."""

from __future__ import annotations

import json
import pathlib

from trusted_launch.demo.report import ACCEPTED, REFUSED, Recorder
from trusted_launch.evidence.eventlog import parse_event_log, replay
from trusted_launch.evidence.tpm2 import (
    QuoteInfo,
    load_go_attestation,
    verify_quote,
    with_initial_values,
)

GCP_LOG = "windows_gcp_shielded_vm_eventlog"
GCP_QUOTE = "windows_gcp_shielded_vm_quote.json"


def run(recorder: Recorder, eventlog_dir: pathlib.Path) -> None:
    """Replay every real log against its expected PCRs; verify and tamper the quote."""
    expected = json.loads((eventlog_dir / "expected_pcrs.json").read_text())
    for name in sorted(expected):
        with recorder.scenario(f"eventlog_replay:{name}", ACCEPTED) as result:
            log = parse_event_log((eventlog_dir / name).read_bytes())
            got = {alg.bank_name: {str(i): v.hex() for i, v in pcrs.items()}
                   for alg, pcrs in replay(log).items()}
            if got != expected[name]:
                result.outcome, result.reason = REFUSED, "replayed PCRs differ from expected"
            else:
                result.reason = (f"{len(log.events)} events, banks "
                                 f"{','.join(a.bank_name for a in log.banks) or 'none'}")
    evidence = load_go_attestation(json.loads((eventlog_dir / GCP_QUOTE).read_text()))
    log_bytes = (eventlog_dir / GCP_LOG).read_bytes()
    with recorder.scenario("real_quote_verified", ACCEPTED) as result:
        _verify_against_log(evidence, log_bytes)
        result.reason = "GCP vTPM quote: AK signature and PCR digest of the replayed log"
    with recorder.scenario("tampered_quote_refused", REFUSED):
        quote = bytearray(evidence.quote)
        quote[-1] ^= 0x01
        verify_quote(evidence.ak_public, bytes(quote), evidence.signature, evidence.pcr_values,
                     nonce=evidence.nonce)
    with recorder.scenario("tampered_eventlog_refused", REFUSED):
        log = parse_event_log(log_bytes)
        digest_at = log.events[-1].offset + 8
        tampered = bytearray(log_bytes)
        tampered[digest_at] ^= 0x01
        _verify_against_log(evidence, bytes(tampered))


def _verify_against_log(evidence, log_bytes: bytes) -> None:
    replayed = replay(parse_event_log(log_bytes))
    attest = verify_quote(evidence.ak_public, evidence.quote, evidence.signature,
                          evidence.pcr_values, nonce=evidence.nonce)
    info = attest.attested
    if not isinstance(info, QuoteInfo):
        raise ValueError("not a quote")
    verify_quote(evidence.ak_public, evidence.quote, evidence.signature,
                 with_initial_values(info.pcr_select, replayed), nonce=evidence.nonce)
