"""Run every benchmark and write one report (``tox -e bench``).

Each ``bench/bench_*.py`` module has ``run() -> dict``; this script runs them
in one process on the same machine, then prints one report in which every
figure stands beside a baseline measured in the same run (and their ratio),
writes the merged figures to ``bench/report.json`` and draws
``bench/launch_breakdown.png``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import pathlib
import sys
import time
import traceback

HERE = pathlib.Path(__file__).resolve().parent
MODULES = ("bench_eventlog", "bench_ima", "bench_tpm2", "bench_digest", "bench_filter",
           "bench_tpm", "bench_protocol", "bench_ttp", "bench_host_monitor",
           "bench_encrypted_image", "bench_access", "bench_rpc", "bench_fleet", "bench_cloud")
REQUIRED = ("launch_added_ms_p50", "launch_added_ms_p95", "plain_launch_ms_p50",
            "tpm_commands_per_launch", "ttp_verify_per_s_core", "ttp_https_per_s",
            "ttp_https_p95_ms", "filter_ns_per_host", "aggregate_extra_specs_ns_per_host",
            "digest_mb_s", "coreutils_digest_mb_s", "eventlog_speedup_vs_tpm2_eventlog",
            "ima_100k_s", "ima_incremental_100_ms", "concurrent_20_ok", "concurrent_20_s",
            "sequential_20_s", "fleet_attestations_per_s", "fleet_worst_staleness_s")
# The module whose figure wins when two report the same key.
OWNER = {"tpm_commands_per_launch": "bench_protocol"}
# figure -> (baseline figure or callable(report) -> number, what the baseline is, target)
COMPARISONS = (
    ("launch_added_ms_p50",
     lambda r: _sum(r, "baseline_tpm_only_ms_p50", "baseline_https_round_trip_ms_p50"),
     "TPM Certify+decrypt alone + one HTTPS round trip (p50)", None),
    ("launch_added_ms_p95",
     lambda r: _sum(r, "baseline_tpm_only_ms_p95", "baseline_https_round_trip_ms_p95"),
     "same, p95", None),
    ("trusted_launch_ms_p50", "plain_launch_ms_p50",
     "plain launch, same Nova harness (fakelibvirt)", None),
    ("trusted_launch_ms_p95", "plain_launch_ms_p95", "same, p95", None),
    ("trusted_launch_ms_p50", "plain_config_drive_launch_ms_p50",
     "plain launch with config_drive=True, same harness (like for like)", "<= +100 ms"),
    ("tpm_commands_per_launch", "tpm_only_fallback_commands",
     "commands without a pre-loaded key (the old path)", "<= 4"),
    ("baseline_tpm_only_ms_p50", "tpm_only_fallback_ms_p50",
     "TPM path without a pre-loaded key (swtpm)", None),
    ("concurrent_20_s", "sequential_20_s", "the same 20 launches one after another", None),
    ("ttp_verify_per_s_core", "baseline_eventlog_parse_replay_per_s",
     "event log parse + replay alone (the floor)", ">= 1000"),
    ("ttp_https_per_s", "baseline_https_keys_per_s",
     "GET /v1/keys under the same load", ">= 400"),
    ("ttp_verify_uncached_per_s_core", "baseline_eventlog_parse_replay_per_s",
     "same, every log parsed and judged again (cache off)", None),
    ("ttp_https_p95_ms", "baseline_https_keys_p95_ms", "GET /v1/keys p95, same load", None),
    ("ttp_https_per_s", "ttp_https_cheroot_per_s",
     "the previous server (cheroot, handshakes in its accept loop), same TTP and load",
     ">= 1.0x"),
    ("ttp_https_p95_ms", "ttp_https_cheroot_p95_ms", "the previous server (cheroot), p95",
     None),
    ("baseline_https_keys_per_s", "baseline_https_keys_cheroot_per_s",
     "GET /v1/keys on the previous server (cheroot)", None),
    ("ttp_https_cpu_bound_per_s", "baseline_https_keys_per_s",
     "attestations/s the cores could serve at the measured CPU (server+DB+client)", ">= 400"),
    ("host_drop_to_filter_s", "host_drop_bound_s",
     "attestation interval + one attestation round (the bound)", None),
    ("fleet_attestations_per_s", "fleet_target_per_s",
     "hosts / interval: the rate the fleet needs (rounds take time too)", None),
    ("fleet_worst_staleness_s", "fleet_interval_s",
     "the attestation interval (ideal worst 'last attested at' age)", "<= interval + 10 s"),
    ("fleet_round_ms_p95", "fleet_idle_round_ms_p95",
     "one host's round (TLS + challenge + attestation), fleet idle", None),
    ("fleet_launch_ms_p50", "fleet_baseline_launch_ms_p50",
     "the same paced launches with the fleet idle", None),
    ("fleet_launch_ms_p95", "fleet_baseline_launch_ms_p95", "same, p95", None),
    ("fleet_max_hosts_cpu_bound", "fleet_hosts",
     "hosts attempted; the bound is cores / CPU per round x interval", None),
    ("filter_with_status_ns_per_host", "filter_with_status_baseline_ns_per_host",
     "Nova's AggregateInstanceExtraSpecsFilter, host status on", "<= 1.0x"),
    ("filter_ns_per_host", "aggregate_extra_specs_ns_per_host",
     "Nova's AggregateInstanceExtraSpecsFilter", None),
    ("digest_mb_s", "coreutils_digest_mb_s", "sha512sum (coreutils), same file", ">= 0.9x"),
    ("eventlog_speedup_vs_tpm2_eventlog", lambda r: 1.0,
     "tpm2_eventlog (tpm2-tools) = 1.0", None),
    ("ima_100k_s", "ima_hash_floor_100k_s", "hashing the same entries alone (the floor)",
     None),
    ("ima_incremental_100_ms", lambda r: _scale(r.get("ima_100k_s"), 1000.0),
     "re-reading a 100k-entry list in full (ms)", None),
    ("encrypted_added_before_boot_ms", lambda r: _scale(r.get("tlvm_decrypt_s"), 1000.0),
     "TLVM-style full decryption of the same 1 GiB image before boot (ms)", None),
    ("first_launch_overlay_ms", lambda r: _scale(r.get("tlvm_decrypt_s"), 1000.0),
     "same; the first launch of an image on a host writes the overlay template", None),
    ("encrypted_read_mb_s", "plain_read_mb_s", "reading the same image unencrypted", None),
    ("authz_host_token_us", "baseline_wsgi_keys_us",
     "a whole GET /v1/keys through the WSGI app (us)", None),
    ("authz_public_us", "baseline_wsgi_keys_us", "same", None),
    ("authz_host_token_uncached_us", "baseline_wsgi_keys_us",
     "same; a token is looked up at most once per 10 s per worker", None),
    ("rpc_launch_ms_p50", "https_launch_ms_p50",
     "the same host's launches over HTTPS, interleaved (bench_rpc)", None),
    ("rpc_launch_ms_p95", "https_launch_ms_p95", "same, p95", None),
    ("rpc_ttp_round_trip_ms_p50", "https_ttp_round_trip_ms_p50",
     "the TTP step over HTTPS, same launches", None),
    ("tpm_certify_ms", "baseline_tpm_get_random_ms", "TPM2_GetRandom round trip", None),
    ("cloud_trusted_active_ms_p50", "cloud_plain_config_drive_active_ms_p50",
     "plain launch with a config drive, real cloud, real guest (like for like)",
     "<= +100 ms"),
    ("cloud_trusted_added_active_ms_p50", "cloud_trusted_answer_ms_p50",
     "time until the real guest answers the tenant (p50)", "<= 0.02x"),
    ("cloud_protocol_in_spawn_ms_p50", lambda r: _scale(r.get("cloud_trusted_spawn_s_p50"),
                                                        1000.0),
     "Nova's spawn of the same trusted launches (ms, p50)", None),
    ("tpm_ecdh_zgen_prestarted_ms", "baseline_software_ecdh_ms", "ECDH in software", None),
)


def _sum(report: dict, *names: str) -> float | None:
    values = [report.get(name) for name in names]
    return None if any(v is None for v in values) else sum(values)


def _scale(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor


def run_all(selected: list[str]) -> dict:
    report: dict = {"notes": {}, "modules": {}}
    for name in selected:
        try:
            module = importlib.import_module(f"bench.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"bench.{name}":
                raise
            continue
        print(f"== {name}", flush=True)
        started = time.perf_counter()
        try:
            figures = module.run()
        except Exception as exc:  # a failed benchmark is reported, not fatal
            traceback.print_exc()
            report["notes"][name] = f"failed: {type(exc).__name__}: {exc}"
            continue
        notes = figures.pop("notes", None)
        if notes:
            report["notes"][name] = notes
        report["modules"][name] = figures
        _merge(report, name, figures)
        print(f"   ({time.perf_counter() - started:.1f} s)", flush=True)
    _require(report)
    return report


def _merge(report: dict, module: str, figures: dict) -> None:
    """Top-level figures; on a name clash the OWNER module (else the first) wins."""
    for key, value in figures.items():
        if key in report and key not in ("notes", "modules"):
            if OWNER.get(key) != module:
                continue
        report[key] = value


def _require(report: dict) -> None:
    for key in REQUIRED:
        if key not in report:
            report[key] = None
            report["notes"].setdefault(key, "not measured: its benchmark module is missing "
                                            "or failed (see the other notes)")
    if report.get("plain_launch_ms_p50") is None:
        report["notes"].setdefault(
            "plain_launch_ms_p50",
            "null: no plain-vs-trusted Nova launch measured here; launch_added_ms_* is the "
            "host-side protocol time per launch (release(), see bench_protocol)")


def _updated(previous: dict, fresh: dict) -> dict:
    """Modules of ``previous`` not re-run in ``fresh``, merged again in MODULES order."""
    modules = {**previous.get("modules", {}), **fresh["modules"]}
    notes = {k: v for k, v in previous.get("notes", {}).items() if k not in REQUIRED}
    notes.update({k: v for k, v in fresh["notes"].items() if k not in REQUIRED})
    report: dict = {"notes": notes, "modules": {}}
    for name in MODULES:
        if name in modules:
            report["modules"][name] = modules[name]
            _merge(report, name, modules[name])
    _require(report)
    return report


def sizing(report: dict) -> str | None:
    """TTP workers (one core each) per 1,000 launches/minute, from the measured CPU cost."""
    cpu_ms = report.get("ttp_server_cpu_ms_per_attestation")
    if not cpu_ms:
        return None
    per_worker_s = 1000.0 / cpu_ms
    busy = 1000 / 60 * cpu_ms / 1000
    return (f"one TTP worker (one core) serves ~{per_worker_s:.0f} attestations/s at 100% CPU "
            f"({cpu_ms:.1f} ms CPU each, PostgreSQL on the same host); 1,000 launches/min = "
            f"16.7/s = {busy:.2f} busy cores, so plan {max(1, math.ceil(busy / 0.5))} worker(s) "
            "per 1,000 launches/min at <= 50% utilisation (plus 1 spare for failover); bursts "
            "queue behind ttp_https_p95_ms")


def text_report(report: dict) -> str:
    lines = ["", "== report: figure | value | baseline (same run) | ratio | target"]
    for figure, baseline, what, target in COMPARISONS:
        value = report.get(figure)
        base = baseline(report) if callable(baseline) else report.get(baseline)
        ratio = (f"{value / base:.2f}x" if isinstance(value, (int, float)) and base
                 and not isinstance(value, bool) else "-")
        lines.append(f"{figure:36s} {_fmt(value):>12s} | {_fmt(base):>10s} {what} | {ratio}"
                     + (f" | target {target}" if target else ""))
    for key in ("nova_launch_added_ms_p50", "concurrent_20_ok", "discrete_tpm_estimate_ms",
                "fleet_sustained", "fleet_failures", "fleet_cpu_cores", "cloud_virt_type"):
        lines.append(f"{key:36s} {_fmt(report.get(key))}")
    rule = sizing(report)
    if rule:
        lines.append(f"sizing: {rule}")
    return "\n".join(lines)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.0f}"
    return "null" if value is None else str(value)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("only", nargs="*", help="benchmark modules to run (default: all)")
    parser.add_argument("--output", default=str(HERE / "report.json"))
    parser.add_argument("--chart", default=str(HERE / "launch_breakdown.png"))
    parser.add_argument("--update", action="store_true",
                        help="re-run only the named modules, keep the other modules' "
                             "figures from the existing --output report")
    parser.add_argument("--cloud-launches", type=int, metavar="N",
                        help="bench_cloud: launches of each kind (default 10)")
    parser.add_argument("--cloud-concurrency", type=int, metavar="K",
                        help="bench_cloud: launches in flight at once (default 1)")
    parser.add_argument("--cloud-warmup", type=int, metavar="R",
                        help="bench_cloud: uncounted rounds first (default 0)")
    args = parser.parse_args(argv)
    for option, variable in (("cloud_launches", "LAUNCHES"), ("cloud_concurrency", "CONCURRENCY"),
                             ("cloud_warmup", "WARMUP")):
        if getattr(args, option) is not None:
            os.environ[f"TRUSTED_LAUNCH_BENCH_CLOUD_{variable}"] = str(getattr(args, option))
    selected = [m if m.startswith("bench_") else f"bench_{m}" for m in args.only] or list(MODULES)
    sys.path.insert(0, str(HERE.parent))
    report = run_all(selected)
    if args.update and pathlib.Path(args.output).exists():
        report = _updated(json.loads(pathlib.Path(args.output).read_text()), report)
    rule = sizing(report)
    if rule:
        report["ttp_sizing_rule"] = rule
    print(text_report(report))
    from bench.report_chart import draw

    chart = draw(report, pathlib.Path(args.chart))
    pathlib.Path(args.output).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    print(f"report written to {args.output}" + (f", chart to {chart}" if chart else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
