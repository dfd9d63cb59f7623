"""PNG chart of the launch-time breakdown per protocol step (matplotlib, Agg)."""

from __future__ import annotations

import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

STEPS = ("bind_key", "certify", "ttp", "decrypt")
COLOURS = {"bind_key": "#9e9e9e", "certify": "#1f77b4", "ttp": "#ff7f0e",
           "decrypt": "#2ca02c", "baseline": "#bdbdbd"}


def rows(report: dict) -> tuple[list, list]:
    """(measured bars, discrete-TPM estimate bars), each [(label, {segment: ms})]."""
    steps = report.get("launch_steps_ms") or {}
    if not steps:
        return [], []
    measured = [(f"swtpm launch,\nper-step p{q}",
                 {s: steps[s][f"p{q}"] for s in STEPS if s in steps})
                for q in (50, 95)]
    measured.append(("baseline: TPM only\n(Certify + decrypt)",
                     {"baseline": report.get("baseline_tpm_only_ms_p50") or 0.0}))
    measured.append(("baseline: one HTTPS\nround trip",
                     {"baseline": report.get("baseline_https_round_trip_ms_p50") or 0.0}))
    estimate = report.get("discrete_tpm_estimate_ms") or {}
    ttp_ms = steps.get("ttp", {}).get("p50", 0.0)
    estimated = []
    for case, certify in (("best", 17), ("worst", 190)):  # Certify = one ECDSA sign
        total = estimate.get(f"ecc_{case}_ms")
        if total is not None:
            estimated.append((f"ECC bind key,\n{case} case",
                              {"certify": certify, "ttp": ttp_ms, "decrypt": total - certify}))
    return measured, estimated


def _panel(axes, bars: list, title: str) -> None:
    for y, (_, segments) in enumerate(bars):
        left = 0.0
        for step in (*STEPS, "baseline"):
            width = segments.get(step, 0.0)
            if width:
                axes.barh(y, width, left=left, color=COLOURS[step])
                left += width
        axes.text(left, y, f" {left:.1f}", va="center", fontsize=8)
    axes.set_yticks(range(len(bars)), [label for label, _ in bars], fontsize=8)
    axes.invert_yaxis()
    axes.set_xlabel("ms per launch (host side)")
    axes.set_title(title, fontsize=10)
    axes.margins(x=0.15)


def draw(report: dict, path: pathlib.Path) -> pathlib.Path | None:
    """Write the chart to ``path``; None if the report has no launch breakdown."""
    measured, estimated = rows(report)
    if not measured:
        return None
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2),
                                         gridspec_kw={"width_ratios": [3, 2]})
    _panel(left, measured, "measured on swtpm (p50 / p95 per step)")
    _panel(right, estimated, "discrete TPM estimate (published latencies)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=COLOURS[s]) for s in (*STEPS, "baseline")]
    figure.legend(handles, ["bind key (pool)", "TPM2_Certify", "TTP (HTTPS + verify)",
                            "decrypt (PolicyPCR + ECDH_ZGen + Flush)", "baseline"],
                  fontsize=8, loc="lower center", ncol=5)
    figure.suptitle("trusted launch: protocol time per step", fontsize=11)
    figure.tight_layout(rect=(0, 0.07, 1, 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
