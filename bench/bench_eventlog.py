"""Event log parse + replay: ours in-process vs ``tpm2_eventlog`` (tpm2-tools).

Keylime shells out to ``tpm2_eventlog`` to turn a binary log into PCR values,
so that subprocess (process start included) is the baseline; both are timed
here, on the same machine and in the same run, as the best of several runs.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
EVENTLOG_DIR = ROOT / "tests" / "data" / "eventlogs"
OURS_REPEAT = 7
OURS_NUMBER = 50
TOOL_REPEAT = 5
MICRO_RUNS = 1000

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from trusted_launch.evidence.eventlog import parse_event_log, replay  # noqa: E402


def _logs() -> list[pathlib.Path]:
    return sorted(p for p in EVENTLOG_DIR.iterdir() if not p.name.endswith(".json"))


def _best_of(func, repeat: int, number: int) -> float:
    """Best mean seconds per call over ``repeat`` batches of ``number`` calls."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for _ in range(number):
            func()
        best = min(best, (time.perf_counter() - started) / number)
    return best


def _parse_replay(data: bytes) -> None:
    replay(parse_event_log(data))


def _parse_decode_replay(data: bytes) -> None:
    log = parse_event_log(data)
    for event in log.events:
        _ = event.decoded
    replay(log)


def _tool_seconds(tool: str, path: pathlib.Path) -> float | None:
    """Best wall time of ``tpm2_eventlog FILE``; None when it fails."""
    best = float("inf")
    for _ in range(TOOL_REPEAT):
        started = time.perf_counter()
        result = subprocess.run([tool, str(path)], capture_output=True, check=False)
        elapsed = time.perf_counter() - started
        if result.returncode != 0:
            return None
        best = min(best, elapsed)
    return best


def _measure(path: pathlib.Path, tool: str | None) -> dict:
    data = path.read_bytes()
    events = len(parse_event_log(data).events)
    ours = _best_of(lambda: _parse_replay(data), OURS_REPEAT, OURS_NUMBER)
    decoded = _best_of(lambda: _parse_decode_replay(data), OURS_REPEAT, OURS_NUMBER)
    started = time.perf_counter()
    for _ in range(MICRO_RUNS):
        _parse_replay(data)
    micro_us = (time.perf_counter() - started) / MICRO_RUNS * 1e6
    entry = {
        "events": events,
        "ours_parse_replay_us": round(ours * 1e6, 1),
        "ours_parse_decode_all_replay_us": round(decoded * 1e6, 1),
        "ours_us_per_100_events": round(ours * 1e6 * 100 / events, 1),
        "ours_mean_of_1000_runs_us": round(micro_us, 1),
    }
    tool_time = _tool_seconds(tool, path) if tool else None
    if tool_time is None:
        entry["tpm2_eventlog"] = "tpm2_eventlog failed" if tool else "tpm2_eventlog not installed"
    else:
        entry["tpm2_eventlog_us"] = round(tool_time * 1e6, 1)
        entry["speedup"] = round(tool_time / ours, 1)
    return entry


def run() -> dict:
    tool = shutil.which("tpm2_eventlog")
    per_log = {path.name: _measure(path, tool) for path in _logs()}
    ratios = [entry["speedup"] for entry in per_log.values() if "speedup" in entry]
    return {
        "eventlog_speedup_vs_tpm2_eventlog": round(statistics.median(ratios), 1) if ratios
        else None,
        "per_log": per_log,
        "notes": "ours: parse + replay in-process, best of "
                 f"{OURS_REPEAT}x{OURS_NUMBER}; tpm2_eventlog: subprocess wall time "
                 f"(process start included, as Keylime runs it), best of {TOOL_REPEAT}",
    }


def _print(report: dict) -> None:
    print(f"{'log':<50} {'events':>6} {'ours us':>9} {'+decode':>9} {'1000x us':>9} "
          f"{'tpm2_eventlog us':>17} {'ratio':>7}")
    for name, entry in report["per_log"].items():
        tool = (f"{entry['tpm2_eventlog_us']:>17.0f} {entry['speedup']:>6.0f}x"
                if "speedup" in entry else f"{entry['tpm2_eventlog']:>25}")
        print(f"{name:<50} {entry['events']:>6} {entry['ours_parse_replay_us']:>9.0f} "
              f"{entry['ours_parse_decode_all_replay_us']:>9.0f} "
              f"{entry['ours_mean_of_1000_runs_us']:>9.0f} {tool}")
    print(f"median speedup vs tpm2_eventlog: {report['eventlog_speedup_vs_tpm2_eventlog']}x")


if __name__ == "__main__":
    figures = run()
    _print(figures)
    if "--json" in sys.argv:
        print(json.dumps(figures, indent=2))
