"""Run every benchmark and write one report (``tox -e bench``).

Each ``bench/bench_*.py`` module has ``run() -> dict``; this script runs them
in one process on the same machine, prints each figure beside its baseline,
and writes the merged figures to ``bench/report.json``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pathlib
import sys
import time
import traceback

HERE = pathlib.Path(__file__).resolve().parent
MODULES = ("bench_eventlog", "bench_ima", "bench_tpm2", "bench_digest", "bench_filter",
           "bench_tpm", "bench_protocol", "bench_ttp")


def run_all(selected: list[str]) -> dict:
    report: dict = {"notes": {}}
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
        except Exception as exc:  # noqa: BLE001 - a failed benchmark is reported, not fatal
            traceback.print_exc()
            report["notes"][name] = f"failed: {type(exc).__name__}: {exc}"
            continue
        notes = figures.pop("notes", None)
        if notes:
            report["notes"][name] = notes
        report.update(figures)
        print(f"   ({time.perf_counter() - started:.1f} s)", flush=True)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("only", nargs="*", help="benchmark modules to run (default: all)")
    parser.add_argument("--output", default=str(HERE / "report.json"))
    args = parser.parse_args(argv)
    selected = [m if m.startswith("bench_") else f"bench_{m}" for m in args.only] or list(MODULES)
    sys.path.insert(0, str(HERE.parent))
    report = run_all(selected)
    pathlib.Path(args.output).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    print(f"report written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
