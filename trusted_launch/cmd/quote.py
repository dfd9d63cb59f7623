"""``trusted-launch quote verify``: check a TPM 2.0 quote and, optionally, its event log."""

from __future__ import annotations

import argparse
import json
import pathlib

from trusted_launch.evidence.tpm2 import (
    Attest,
    QuoteEvidence,
    QuoteInfo,
    load_go_attestation,
    parse_signature,
    verify_quote,
    with_initial_values,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    quote = subparsers.add_parser("quote", help="TPM 2.0 quote tools")
    actions = quote.add_subparsers(dest="quote_command", required=True)
    verify = actions.add_parser(
        "verify", help="verify a quote's signature and PCR digest",
        description="Verify a go-attestation style JSON quote file: the AK signature, "
                    "the nonce and the PCR digest against the file's PCR values and, "
                    "with --eventlog, against the PCRs replayed from a firmware event log.")
    verify.add_argument("file", type=pathlib.Path, help="quote JSON (AK, Quote, Log.PCRs)")
    verify.add_argument("--eventlog", type=pathlib.Path,
                        help="binary_bios_measurements whose replay must match the quote")
    verify.add_argument("--json", action="store_true", help="print the verdict as JSON")
    verify.set_defaults(func=verify_command)


def verify_command(args: argparse.Namespace) -> int:
    evidence = load_go_attestation(_read_json(args.file))
    attest = _verify(evidence, evidence.pcr_values)
    report = _report(evidence, attest)
    if args.eventlog is not None:
        report["eventlog"] = _verify_eventlog(evidence, attest, args.eventlog)
    print(json.dumps(report, indent=2) if args.json else _summary(report))
    return 0


def _read_json(path: pathlib.Path) -> object:
    """The JSON document in ``path``; CommandError naming the file if it is not JSON."""
    from trusted_launch.cmd.cli import CommandError
    try:
        return json.loads(path.read_bytes())
    except ValueError as exc:  # also UnicodeDecodeError
        raise CommandError(f"{path} is not a JSON quote file (go-attestation format): "
                           f"{exc}") from None


def _verify(evidence: QuoteEvidence, pcr_values) -> Attest:
    return verify_quote(evidence.ak_public, evidence.quote, evidence.signature, pcr_values,
                        nonce=evidence.nonce)


def _verify_eventlog(evidence: QuoteEvidence, attest: Attest, path: pathlib.Path) -> dict:
    from trusted_launch.evidence.eventlog import replay_event_log

    replayed = replay_event_log(path.read_bytes())
    info = attest.attested
    assert isinstance(info, QuoteInfo)
    _verify(evidence, with_initial_values(info.pcr_select, replayed))
    extended = sum(1 for alg, pcrs in info.pcr_select for pcr in pcrs
                   if pcr in replayed.get(alg, {}))
    return {"path": str(path), "pcrs_from_log": extended,
            "pcrs_at_initial_value": len(info.pcr_select) - extended}


def _report(evidence: QuoteEvidence, attest: Attest) -> dict:
    info = attest.attested
    assert isinstance(info, QuoteInfo)
    signature = parse_signature(evidence.signature)
    return {
        "verdict": "verified",
        "signature": f"{signature.algorithm.name}-{signature.hash_alg.bank_name}",
        "ak_name": evidence.ak_public.name.hex(),
        "pcr_selection": str(info.pcr_select),
        "pcr_digest": info.pcr_digest.hex(),
        "nonce": evidence.nonce.hex(),
        "clock": attest.clock_info.clock,
    }


def _summary(report: dict) -> str:
    lines = [f"quote verified: {report['signature']} signature by AK {report['ak_name']}",
             f"PCR digest {report['pcr_digest']} matches the file's values of "
             f"{report['pcr_selection']}"]
    log = report.get("eventlog")
    if log:
        lines.append(f"event log {log['path']} replays to the quoted digest "
                     f"({log['pcrs_from_log']} PCRs extended by the log, "
                     f"{log['pcrs_at_initial_value']} at their initial value)")
    return "\n".join(lines)
