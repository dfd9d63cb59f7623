"""The pure part of the real-cloud launch bench: compute-log parsing, statistics, report.

:mod:`bench.bench_cloud` takes the samples (one dict per launch) on a running
cloud; this module turns them and the nova-compute logs into figures (p50/p95
per kind and metric, trusted minus plain-with-config-drive, the protocol's
share of ``spawn``, where a launch spends its seconds) and into the text
report. Nothing here talks to the cloud, so it is unit-tested
(tests/unit/test_bench_cloud.py).
"""

from __future__ import annotations

import dataclasses
import datetime
import re
import statistics
from collections.abc import Iterable

KINDS = ("plain", "plain_config_drive", "trusted")
# Per-launch times, ms from the create call (answer: None when the guest never answered).
METRICS = ("active_ms", "agent_started_ms", "answer_ms")
TARGET_ADDED_ACTIVE_MS = 100.0
TARGET_ADDED_SHARE_OF_ANSWER = 0.02

LOG_LINE_RE = re.compile(r"^(?P<stamp>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) .*?"
                         r"\[instance: (?P<id>[0-9a-f-]{36})\] (?P<message>.*)$", re.M)
TOOK_RE = re.compile(r"^Took (?P<s>[0-9.]+) seconds to (?P<what>build instance|"
                     r"spawn the instance on the hypervisor)")
STEPS_RE = re.compile(r"^trusted launch checks passed(?: in (?P<total>[0-9.]+) ms)? "
                      r"\((?P<steps>[^)]*)\)(?:, of which (?P<in_spawn>[0-9.]+) ms in "
                      r"spawn's path)?")
STEP_RE = re.compile(r"^(?P<name>[a-z_]+) (?P<ms>[0-9.]+) ms$")
CREATING_IMAGES = "Creating image(s)"
# Nova starts the domain paused and resumes it once Neutron reports the VIF plugged.
PAUSED, RESUMED = "VM Paused (Lifecycle Event)", "VM Resumed (Lifecycle Event)"


@dataclasses.dataclass
class InstanceLog:
    """What one nova-compute log says about one instance (times: seconds since the epoch)."""

    first_seen: float | None = None      # the compute's first line (the claim): scheduled
    creating_images: float | None = None  # spawn has started on the image stage
    protocol_logged: float | None = None  # the driver's "trusted launch checks passed"
    protocol_steps_ms: dict[str, float] = dataclasses.field(default_factory=dict)
    protocol_total_ms: float | None = None  # the driver's own total (newer drivers log it)
    protocol_in_spawn_ms: float | None = None  # of it, what spawn waited for (the rest
    #                                            overlapped the image fetch and disks)
    spawn_s: float | None = None         # Nova's "Took X seconds to spawn ..."
    build_s: float | None = None         # Nova's "Took X seconds to build instance"
    build_logged: float | None = None    # when the build line was written
    paused: float | None = None          # the domain started, paused for network-vif-plugged
    resumed: float | None = None         # ... and resumed once it came

    @property
    def vif_wait_s(self) -> float | None:
        """How long the paused domain waited for Neutron's network-vif-plugged."""
        if self.paused is None or self.resumed is None or self.resumed < self.paused:
            return None
        return self.resumed - self.paused

    @property
    def protocol_ms(self) -> float | None:
        """The protocol's time in spawn's path: what spawn waited for if the driver said,
        else its total (all of it serial), else the sum of its steps."""
        if self.protocol_in_spawn_ms is not None:
            return self.protocol_in_spawn_ms
        if self.protocol_total_ms is not None:
            return self.protocol_total_ms
        return sum(self.protocol_steps_ms.values()) if self.protocol_steps_ms else None


def _epoch(stamp: str) -> float:
    """An oslo.log time stamp (the machine's local time) as seconds since the epoch."""
    return datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f").timestamp()


def parse_steps(text: str) -> dict[str, float]:
    """``"attest 12 ms, ttp 30 ms"`` -> ``{"attest": 12.0, "ttp": 30.0}`` (bad parts skipped)."""
    steps: dict[str, float] = {}
    for part in text.split(", "):
        match = STEP_RE.match(part.strip())
        if match:
            steps[match["name"]] = float(match["ms"])
    return steps


def parse_compute_log(text: str, wanted: Iterable[str] | None = None) -> dict[str, InstanceLog]:
    """Per instance id (only ``wanted`` ones if given), the events of a nova-compute log."""
    keep = set(wanted) if wanted is not None else None
    found: dict[str, InstanceLog] = {}
    for match in LOG_LINE_RE.finditer(text):
        instance_id = match["id"]
        if keep is not None and instance_id not in keep:
            continue
        entry = found.setdefault(instance_id, InstanceLog())
        at, message = _epoch(match["stamp"]), match["message"]
        if entry.first_seen is None:
            entry.first_seen = at
        if message.startswith(CREATING_IMAGES) and entry.creating_images is None:
            entry.creating_images = at
        if message.startswith(PAUSED) and entry.paused is None:
            entry.paused = at
        elif message.startswith(RESUMED) and entry.resumed is None:
            entry.resumed = at
        if (took := TOOK_RE.match(message)) is not None:
            if took["what"] == "build instance":
                entry.build_s, entry.build_logged = float(took["s"]), at
            else:
                entry.spawn_s = float(took["s"])
        elif (steps := STEPS_RE.match(message)) is not None:
            entry.protocol_steps_ms = parse_steps(steps["steps"])
            entry.protocol_total_ms = float(steps["total"]) if steps["total"] else None
            entry.protocol_in_spawn_ms = (float(steps["in_spawn"]) if steps["in_spawn"]
                                          else None)
            entry.protocol_logged = at
    return found


def percentile(values: list[float], fraction: float) -> float | None:
    """Percentile (``fraction`` 0..1) of ``values``, linear between the closest ranks (as
    numpy's default; p50 is the median); None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    position = fraction * (len(ordered) - 1)
    below = int(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def _p(values: list[float], fraction: float, digits: int = 1) -> float | None:
    value = percentile(values, fraction)
    return None if value is None else round(value, digits)


def add_log_figures(sample: dict, entry: InstanceLog | None) -> None:
    """Put the compute log's view of one launch into its sample (seconds from create)."""
    if entry is None:
        return
    created = sample["created_at"]
    if entry.first_seen is not None:
        sample["scheduled_s"] = round(entry.first_seen - created, 3)
    if entry.build_s is not None:
        sample["build_s"] = entry.build_s
        if entry.first_seen is not None and entry.build_logged is not None:
            sample["build_to_active_s"] = round(
                sample["active_ms"] / 1000 - (entry.build_logged - created), 3)
    if entry.spawn_s is not None:
        sample["spawn_s"] = entry.spawn_s
        if entry.build_s is not None:
            sample["build_before_spawn_s"] = round(entry.build_s - entry.spawn_s, 3)
    if entry.vif_wait_s is not None:
        sample["vif_wait_ms"] = round(entry.vif_wait_s * 1000, 1)
        sample["active_less_vif_wait_ms"] = round(sample["active_ms"] - entry.vif_wait_s * 1000,
                                                  1)
    if entry.protocol_ms is not None:
        sample["protocol_ms"] = round(entry.protocol_ms, 1)
        sample["protocol_total_ms"] = entry.protocol_total_ms
        sample["protocol_steps_ms"] = entry.protocol_steps_ms


def summarize(samples: dict[str, list[dict]]) -> dict:
    """p50/p95 per kind and metric, the trusted launch's additions and their targets."""
    figures: dict = {}
    for kind, kind_samples in samples.items():
        figures[f"cloud_{kind}_launches"] = len(kind_samples)
        for metric in (*METRICS, "boot_ms", "vif_wait_ms", "active_less_vif_wait_ms"):
            values = [s[metric] for s in kind_samples if s.get(metric) is not None]
            name = metric.removesuffix("_ms")
            figures[f"cloud_{kind}_{name}_ms_p50"] = _p(values, 0.5)
            figures[f"cloud_{kind}_{name}_ms_p95"] = _p(values, 0.95)
        guests = [s for s in kind_samples if s.get("guest", True)]
        figures[f"cloud_{kind}_guests_measured"] = len(guests)
        unanswered = [s for s in guests if s.get("answer_ms") is None]
        if unanswered:
            figures[f"cloud_{kind}_answer_missing"] = (
                f"{len(unanswered)} of {len(guests)}: "
                + "; ".join(sorted({s.get('answer_note') or 'no answer' for s in unanswered})))
        for name in ("scheduled_s", "build_before_spawn_s", "spawn_s", "build_s",
                     "build_to_active_s"):
            values = [s[name] for s in kind_samples if s.get(name) is not None]
            figures[f"cloud_{kind}_{name}_p50"] = _p(values, 0.5, 3)
    trusted = samples.get("trusted", [])
    protocol = [s["protocol_ms"] for s in trusted if s.get("protocol_ms") is not None]
    figures["cloud_protocol_in_spawn_ms_p50"] = _p(protocol, 0.5)
    figures["cloud_protocol_in_spawn_ms_p95"] = _p(protocol, 0.95)
    figures["cloud_protocol_total_ms_p50"] = _p(
        [s["protocol_total_ms"] for s in trusted if s.get("protocol_total_ms") is not None], 0.5)
    shares = [s["protocol_ms"] / 1000 / s["spawn_s"] for s in trusted
              if s.get("protocol_ms") is not None and s.get("spawn_s")]
    figures["cloud_protocol_share_of_spawn_p50"] = _p(shares, 0.5, 4)
    step_names = sorted({name for s in trusted for name in s.get("protocol_steps_ms", {})})
    figures["cloud_protocol_steps_ms_p50"] = {
        name: _p([s["protocol_steps_ms"][name] for s in trusted
                  if name in s.get("protocol_steps_ms", {})], 0.5)
        for name in step_names}
    _added(figures)
    return figures


def _added(figures: dict) -> None:
    """Trusted minus plain-with-config-drive at ACTIVE (p50), and against the targets."""
    trusted = figures.get("cloud_trusted_active_ms_p50")
    plain = figures.get("cloud_plain_config_drive_active_ms_p50")
    answer = figures.get("cloud_trusted_answer_ms_p50")
    added = None if trusted is None or plain is None else round(trusted - plain, 1)
    figures["cloud_trusted_added_active_ms_p50"] = added
    trusted_less, plain_less = (figures.get(f"cloud_{kind}_active_less_vif_wait_ms_p50")
                                for kind in ("trusted", "plain_config_drive"))
    figures["cloud_trusted_added_active_less_vif_wait_ms_p50"] = (
        None if trusted_less is None or plain_less is None
        else round(trusted_less - plain_less, 1))
    figures["cloud_trusted_added_share_of_answer"] = (
        None if added is None or not answer else round(added / answer, 4))
    figures["cloud_target_added_active_met"] = (
        None if added is None else added <= TARGET_ADDED_ACTIVE_MS)
    share = figures["cloud_trusted_added_share_of_answer"]
    figures["cloud_target_added_share_met"] = (
        None if share is None else share <= TARGET_ADDED_SHARE_OF_ANSWER)


def load_summary(loads: list[float]) -> dict:
    """The 1-minute load average sampled during the run: min, median, max."""
    if not loads:
        return {}
    return {"cloud_load_1m_min": round(min(loads), 2),
            "cloud_load_1m_median": round(statistics.median(loads), 2),
            "cloud_load_1m_max": round(max(loads), 2)}


def hypervisor_name(virt_type: str) -> str:
    """``kvm`` -> KVM, ``qemu`` -> TCG (QEMU's emulator), else what it is."""
    return {"kvm": "KVM", "qemu": "TCG"}.get(virt_type, virt_type or "unknown")


def _cell(value: object, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.0f}{unit}" if abs(value) >= 100 else f"{value:.3g}{unit}"
    return f"{value}{unit}"


def text_report(figures: dict) -> str:
    """The bench's own table: per kind and metric p50/p95, then the additions and the rest."""
    why = figures.get("cloud_virt_type_reason") or f"virt_type {figures.get('cloud_virt_type')}"
    lines = [f"real cloud, {figures.get('cloud_launches_per_kind')} launches per kind, "
             f"guests under {figures.get('cloud_hypervisor')} ({why}); "
             f"load average (1 min) {figures.get('cloud_load_1m_min')} to "
             f"{figures.get('cloud_load_1m_max')} (median {figures.get('cloud_load_1m_median')}) "
             f"on {figures.get('cloud_cpus')} CPUs; concurrency {figures.get('cloud_concurrency')}",
             f"{'kind':20s} {'to ACTIVE p50/p95':>20s} {'agent started p50/p95':>24s} "
             f"{'guest answers p50/p95':>24s}  (ms from the create call; n = launches, "
             "guests measured)"]
    for kind in KINDS:
        cells = [f"{_cell(figures.get(f'cloud_{kind}_{m}_ms_p50'))}/"
                 f"{_cell(figures.get(f'cloud_{kind}_{m}_ms_p95'))}"
                 for m in ("active", "agent_started", "answer")]
        missing = figures.get(f"cloud_{kind}_answer_missing")
        lines.append(f"{kind:20s} {cells[0]:>20s} {cells[1]:>24s} {cells[2]:>24s}"
                     f"  n = {figures.get(f'cloud_{kind}_launches')}, "
                     f"{figures.get(f'cloud_{kind}_guests_measured')}"
                     + (f"  (answer: {missing})" if missing else ""))
    added, share = (figures.get("cloud_trusted_added_active_ms_p50"),
                    figures.get("cloud_trusted_added_share_of_answer"))
    lines += [
        f"trusted - plain with config drive, p50 to ACTIVE: {_cell(added, ' ms')} "
        f"(target <= {TARGET_ADDED_ACTIVE_MS:.0f} ms: {_verdict(figures, 'active')}); "
        f"{_cell(None if share is None else share * 100, ' %')} of the trusted guest's answer "
        f"time (target <= {TARGET_ADDED_SHARE_OF_ANSWER * 100:.0f} %: "
        f"{_verdict(figures, 'share')})",
        "the same without the wait for Neutron's network-vif-plugged (the L2 agent's polling "
        "phase: p50 " + ", ".join(
            f"{kind} {_cell(figures.get(f'cloud_{kind}_vif_wait_ms_p50'), ' ms')}"
            for kind in KINDS) + "): "
        f"{_cell(figures.get('cloud_trusted_added_active_less_vif_wait_ms_p50'), ' ms')}",
        f"protocol in spawn's path (driver's log, trusted): p50 "
        f"{_cell(figures.get('cloud_protocol_in_spawn_ms_p50'), ' ms')}, p95 "
        f"{_cell(figures.get('cloud_protocol_in_spawn_ms_p95'), ' ms')} of its total p50 "
        f"{_cell(figures.get('cloud_protocol_total_ms_p50'), ' ms')} (the rest overlaps the "
        "image and disks); share of spawn p50 "
        f"{_cell(_percent(figures.get('cloud_protocol_share_of_spawn_p50')), ' %')}; steps p50 "
        + ", ".join(f"{k} {_cell(v)} ms"
                    for k, v in (figures.get("cloud_protocol_steps_ms_p50") or {}).items()),
        "where the seconds go (p50, s): create -> claimed on a compute (API, scheduler, "
        "conductor) | claim -> spawn (network, block devices) | spawn (image cache, disk, "
        "config drive, domain, VIF plugged) | build end -> ACTIVE seen | ACTIVE -> agent "
        "started (guest boot)"]
    for kind in KINDS:
        boot = figures.get(f"cloud_{kind}_boot_ms_p50")
        lines.append(f"  {kind:20s} " + " | ".join(
            _cell(figures.get(f"cloud_{kind}_{name}_p50"))
            for name in ("scheduled_s", "build_before_spawn_s", "spawn_s",
                         "build_to_active_s"))
            + f" | {_cell(None if boot is None else boot / 1000)}")
    return "\n".join(lines)


def _percent(value: float | None) -> float | None:
    return None if value is None else value * 100


def _verdict(figures: dict, which: str) -> str:
    met = figures.get(f"cloud_target_added_{which}_met")
    return "not measured" if met is None else ("met" if met else "NOT met")
