"""Nova's own libvirt driver unit tests, stock LibvirtDriver vs TrustedLibvirtDriver.

Runs the selection in ``tests/nova_unit/selection.txt`` of
``nova.tests.unit.virt.libvirt.test_driver`` (from the nova wheel) once with
Nova's LibvirtDriver and once with TrustedLibvirtDriver in its place
(``tests/nova_unit/driver_swap.py``), then prints both counts. Fails if the
trusted driver fails or errors in any test (a test failing with the stock
driver too is reported as the environment's problem, and fails the run as
well). Usage: ``python tools/nova_driver_tests.py [--driver stock|trusted]
[--workers N]``, from the source tree's root.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass

ROOT = pathlib.Path(__file__).resolve().parents[1]
SELECTION = ROOT / "tests" / "nova_unit" / "selection.txt"
NOVA_TESTS = "nova.tests.unit.virt.libvirt.test_driver"


@dataclass
class Counts:
    driver: str
    tests: int = 0
    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    seconds: float = 0.0
    exit_status: int = 0


def selection() -> str:
    """The -k expression: the file's non-comment lines joined."""
    lines = [line.strip() for line in SELECTION.read_text().splitlines()]
    return " ".join(line for line in lines if line and not line.startswith("#"))


def run(driver: str, workers: int, report: pathlib.Path) -> Counts:
    command = [sys.executable, "-m", "pytest", "-p", "tests.nova_unit.driver_swap",
               f"--libvirt-driver={driver}", "--pyargs", NOVA_TESTS, "-k", selection(),
               "-q", "-p", "no:randomly", f"--junitxml={report}"]
    if workers > 1:
        command += ["-n", str(workers)]
    started = time.monotonic()
    finished = subprocess.run(command, cwd=ROOT, check=False)
    counts = Counts(driver, seconds=round(time.monotonic() - started, 1),
                    exit_status=finished.returncode)
    if report.exists():
        suite = ET.parse(report).getroot().find("testsuite")  # noqa: S314
        for key in ("tests", "failures", "errors", "skipped"):
            setattr(counts, {"failures": "failed"}.get(key, key), int(suite.get(key, 0)))
        counts.passed = counts.tests - counts.failed - counts.errors - counts.skipped
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--driver", choices=("stock", "trusted"), action="append",
                        help="run only this driver (repeatable; default: both)")
    parser.add_argument("--workers", type=int, default=2, help="pytest-xdist workers")
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="nova-driver-tests-") as tmp:
        for driver in args.driver or ("stock", "trusted"):
            results.append(run(driver, args.workers, pathlib.Path(tmp) / f"{driver}.xml"))
    for counts in results:
        print(f"nova libvirt driver tests with {counts.driver:>7} LibvirtDriver: "
              f"{counts.passed} passed, {counts.failed} failed, {counts.errors} errors, "
              f"{counts.skipped} skipped of {counts.tests} in {counts.seconds:.0f} s")
    print(json.dumps({"nova_driver_tests": [asdict(c) for c in results]}))
    broken = [c for c in results if c.failed or c.errors or c.exit_status or not c.tests]
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
