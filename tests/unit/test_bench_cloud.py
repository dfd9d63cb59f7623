"""The real-cloud bench's pure parts: compute-log parsing, statistics, the report."""

from __future__ import annotations

import datetime

import pytest

from bench import cloud_figures
from bench.bench_cloud import interleaved, split_samples
from bench.cloud_figures import (
    add_log_figures,
    parse_compute_log,
    parse_steps,
    percentile,
    summarize,
    text_report,
)

TRUSTED_ID = "11111111-2222-3333-4444-555555555555"
PLAIN_ID = "66666666-7777-8888-9999-000000000000"


def _line(stamp: str, instance: str, message: str, level: str = "INFO") -> str:
    return (f"2026-12-02 {stamp} 4242 {level} nova.compute.manager [req-1 demo demo - - - -] "
            f"[instance: {instance}] {message}\n")


def _epoch(stamp: str) -> float:
    return datetime.datetime.strptime(f"2026-12-02 {stamp}", "%Y-%m-%d %H:%M:%S.%f").timestamp()


LOG = "".join([
    "2026-12-02 17:00:00.000 4242 INFO nova.service [-] Starting compute node\n",
    _line("17:00:01.500", TRUSTED_ID, "Attempting claim: memory 1024 MB"),
    _line("17:00:02.000", TRUSTED_ID, "Creating image(s)"),
    _line("17:00:03.000", TRUSTED_ID, "trusted launch checks passed in 95.5 ms (ttp 40.0 ms, "
                                      "bind_key 0.5 ms, certify 20.0 ms, decrypt 25.0 ms, "
                                      "image_digest 1.0 ms, encrypted_image 0.2 ms), of "
                                      "which 30.5 ms in spawn's path (the rest overlapped the "
                                      "image and disks)"),
    _line("17:00:07.250", TRUSTED_ID, "VM Paused (Lifecycle Event)"),
    _line("17:00:08.750", TRUSTED_ID, "VM Resumed (Lifecycle Event)"),
    _line("17:00:09.000", TRUSTED_ID, "Took 7.00 seconds to spawn the instance on the "
                                      "hypervisor."),
    _line("17:00:09.400", TRUSTED_ID, "Took 7.90 seconds to build instance."),
    _line("17:00:05.000", PLAIN_ID, "Attempting claim: memory 1024 MB"),
    _line("17:00:09.000", PLAIN_ID, "Took 3.50 seconds to spawn the instance on the "
                                    "hypervisor."),
])


def test_compute_log_gives_each_instances_claim_spawn_build_and_protocol_steps() -> None:
    found = parse_compute_log(LOG)
    trusted, plain = found[TRUSTED_ID], found[PLAIN_ID]
    assert trusted.first_seen == pytest.approx(_epoch("17:00:01.500"))
    assert trusted.creating_images == pytest.approx(_epoch("17:00:02.000"))
    assert (trusted.spawn_s, trusted.build_s) == (7.0, 7.9)
    assert trusted.build_logged == pytest.approx(_epoch("17:00:09.400"))
    assert trusted.protocol_steps_ms["certify"] == 20.0
    assert trusted.protocol_total_ms == 95.5  # the driver's total, not the sum of the steps
    assert trusted.protocol_ms == 30.5  # what spawn waited for
    assert plain.protocol_ms is None and plain.build_s is None and plain.spawn_s == 3.5
    assert trusted.vif_wait_s == pytest.approx(1.5) and plain.vif_wait_s is None


def test_compute_log_keeps_only_the_wanted_instances() -> None:
    assert set(parse_compute_log(LOG, [PLAIN_ID])) == {PLAIN_ID}


def test_steps_without_a_total_are_summed_and_bad_parts_skipped() -> None:
    log = _line("17:00:03.000", TRUSTED_ID,
                "trusted launch checks passed (ttp 40 ms, certify 20 ms, garbage)")
    entry = parse_compute_log(log)[TRUSTED_ID]
    assert entry.protocol_steps_ms == {"ttp": 40.0, "certify": 20.0}
    assert entry.protocol_ms == 60.0
    serial = _line("17:00:03.000", TRUSTED_ID, "trusted launch checks passed in 70.0 ms "
                                               "(ttp 40.0 ms, certify 20.0 ms)")
    assert parse_compute_log(serial)[TRUSTED_ID].protocol_ms == 70.0
    assert parse_steps("ttp 1.5 ms, x") == {"ttp": 1.5}


def test_percentile_interpolates_between_ranks_and_is_none_for_no_values() -> None:
    values = [float(v) for v in range(10, 0, -1)]  # unordered on purpose
    assert percentile(values, 0.5) == pytest.approx(5.5)  # the median of 1..10
    assert percentile(values, 0.95) == pytest.approx(9.55)
    assert percentile(values, 0.0) == 1.0 and percentile(values, 1.0) == 10.0
    assert percentile([7.0], 0.95) == 7.0
    assert percentile([], 0.5) is None


def test_log_figures_are_seconds_from_the_create_call() -> None:
    entry = parse_compute_log(LOG)[TRUSTED_ID]
    created = _epoch("17:00:00.500")
    sample = {"created_at": created, "active_ms": 10_000.0}
    add_log_figures(sample, entry)
    assert sample["scheduled_s"] == pytest.approx(1.0)
    assert sample["build_before_spawn_s"] == pytest.approx(0.9)
    assert sample["build_to_active_s"] == pytest.approx(10.0 - 8.9)
    assert (sample["protocol_ms"], sample["protocol_total_ms"]) == (30.5, 95.5)
    assert sample["vif_wait_ms"] == pytest.approx(1500.0)
    assert sample["active_less_vif_wait_ms"] == pytest.approx(8500.0)
    untouched = {"created_at": created, "active_ms": 1.0}
    add_log_figures(untouched, None)
    assert untouched == {"created_at": created, "active_ms": 1.0}


def _samples(active: dict[str, list[float]], answer: float = 60_000.0) -> dict:
    samples = {}
    for kind, values in active.items():
        samples[kind] = [{"active_ms": value, "agent_started_ms": value + 40_000,
                          "boot_ms": 40_000.0,
                          "answer_ms": None if kind == "plain" else answer,
                          "answer_note": "no address: the guest did not answer"
                          if kind == "plain" else "answered",
                          "spawn_s": 5.0, "protocol_ms": 100.0 if kind == "trusted" else None,
                          "protocol_steps_ms": {"ttp": 60.0, "certify": 40.0}
                          if kind == "trusted" else {}}
                         for value in values]
    return samples


def test_summary_gives_the_added_time_its_share_and_the_verdicts() -> None:
    figures = summarize(_samples({"plain": [900.0, 1000.0, 1100.0],
                                  "plain_config_drive": [1000.0, 1100.0, 1200.0],
                                  "trusted": [1150.0, 1250.0, 1350.0]}))
    assert figures["cloud_trusted_active_ms_p50"] == 1250.0
    assert figures["cloud_trusted_added_active_ms_p50"] == 150.0
    assert figures["cloud_trusted_added_share_of_answer"] == pytest.approx(150 / 60_000, abs=1e-4)
    assert figures["cloud_target_added_active_met"] is False
    assert figures["cloud_target_added_share_met"] is True
    assert figures["cloud_plain_answer_ms_p50"] is None
    assert figures["cloud_plain_answer_missing"].startswith("3 of 3: no address")
    to_active_only = _samples({"plain": [1000.0, 1100.0]})
    to_active_only["plain"][1].update(guest=False, answer_ms=None)
    assert summarize(to_active_only)["cloud_plain_answer_missing"].startswith("1 of 1:")
    assert "cloud_trusted_answer_missing" not in figures
    assert figures["cloud_protocol_in_spawn_ms_p50"] == 100.0
    assert figures["cloud_protocol_share_of_spawn_p50"] == 0.02
    assert figures["cloud_protocol_steps_ms_p50"] == {"certify": 40.0, "ttp": 60.0}


def test_summary_takes_the_added_time_also_without_neutrons_vif_wait() -> None:
    samples = _samples({"plain_config_drive": [1000.0, 1800.0], "trusted": [1900.0, 1300.0]})
    for sample, wait in zip(samples["plain_config_drive"] + samples["trusted"],
                            (100.0, 900.0, 900.0, 300.0), strict=True):
        sample.update(vif_wait_ms=wait, active_less_vif_wait_ms=sample["active_ms"] - wait)
    figures = summarize(samples)
    assert figures["cloud_trusted_added_active_ms_p50"] == 200.0
    assert figures["cloud_trusted_vif_wait_ms_p50"] == 600.0
    assert figures["cloud_trusted_added_active_less_vif_wait_ms_p50"] == 100.0


def test_summary_without_trusted_answers_reports_the_share_as_unmeasured() -> None:
    samples = _samples({"plain_config_drive": [1000.0], "trusted": [1050.0]})
    for sample in samples["trusted"]:
        sample["answer_ms"] = None
    figures = summarize(samples)
    assert figures["cloud_trusted_added_active_ms_p50"] == 50.0
    assert figures["cloud_target_added_active_met"] is True
    assert figures["cloud_trusted_added_share_of_answer"] is None
    assert figures["cloud_target_added_share_met"] is None


def test_text_report_states_hypervisor_load_targets_and_missing_answers() -> None:
    figures = summarize(_samples({"plain": [1000.0], "plain_config_drive": [1000.0],
                                  "trusted": [1250.0]}))
    figures.update({"cloud_launches_per_kind": 1, "cloud_hypervisor": "TCG",
                    "cloud_virt_type": "qemu", "cloud_cpus": 2, "cloud_concurrency": 1,
                    **cloud_figures.load_summary([3.0, 9.5, 5.0])})
    report = text_report(figures)
    assert "guests under TCG (virt_type qemu)" in report
    assert "load average (1 min) 3.0 to 9.5 (median 5.0)" in report
    assert "p50 to ACTIVE: 250 ms (target <= 100 ms: NOT met)" in report
    assert "n = 1, 1  (answer: 1 of 1: no address" in report
    assert "certify 40 ms" in report


def test_launch_order_interleaves_the_kinds_and_names_warmups() -> None:
    order = interleaved(2, warmup=1)
    assert [kind for kind, _, _ in order] == list(cloud_figures.KINDS) * 3
    assert [label for _, label, _ in order][:3] == ["plain-warmup-0",
                                                    "plain_config_drive-warmup-0",
                                                    "trusted-warmup-0"]
    assert order[-1] == ("trusted", "trusted-1-2", True)
    guests = interleaved(3, warmup=1, guest_launches=1)
    assert [guest for _, _, guest in guests] == [False] * 3 + [True] * 3 + [False] * 6


def test_samples_split_into_kinds_failures_and_unstarted_launches() -> None:
    ended = [{"kind": "plain", "label": "plain-0-0", "active_ms": 1.0},
             {"kind": "trusted", "label": "trusted-warmup-0", "active_ms": 2.0},
             {"kind": "trusted", "label": "trusted-0-1", "error": "RuntimeError: ERROR"},
             {"kind": "trusted", "label": "trusted-1-2", "not_run": "time budget"}]
    samples, failed, not_run = split_samples(ended)
    assert samples == {"plain": [ended[0]], "plain_config_drive": [], "trusted": []}
    assert failed == [ended[2]] and not_run == 1


def test_port_probe_tells_an_open_port_from_a_refusing_guest_and_gives_up_at_the_deadline(
        ) -> None:
    import socket
    import time

    from bench.cloud_probe import _port

    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        assert _port("127.0.0.1", port, time.time() + 30)["how"] == "agent port open"
    refused = _port("127.0.0.1", port, time.time() + 30)  # closed now: the stack resets
    assert refused["at"] is not None and refused["how"].startswith("refused by the guest")
    expired = _port("127.0.0.1", port, time.time() - 1)
    assert expired == {"at": None, "how": "deadline; last attempt: no attempt"}
