"""Results of a ``tempest run --subunit``: each test's status, counts, and two runs compared.

Used by tests/cloud/test_tempest.py (the plugin's run must pass) and by
tools/run-tempest.sh (the compute API tests with the stock and the trusted
Nova driver, side by side). ``python -m trusted_launch.sandbox.cloud.tempest_results
stock.subunit trusted.subunit`` prints the comparison.
"""

from __future__ import annotations

import argparse
import io
import pathlib
import re
import sys
from collections import Counter

OUTCOMES = ("success", "fail", "skip")
# A setUpClass/tearDownClass failure is reported under a name like this one.
_CLASS_FIXTURE = re.compile(r"^(setUpClass|tearDownClass) \((?P<cls>[^)]+)\)$")
_ATTRIBUTES = re.compile(r"\[[^\]]*\]$")


def statuses(stream: bytes) -> dict[str, str]:
    """test id (without its ``[id-...]`` attributes) -> success, fail, skip (or xfail...)."""
    import subunit
    import testtools

    found: dict[str, str] = {}

    def record(test: dict) -> None:
        if test["status"] in ("exists", "inprogress", None):
            return
        found[_ATTRIBUTES.sub("", test["id"])] = test["status"]

    result = testtools.StreamToDict(record)
    result.startTestRun()
    subunit.ByteStreamToStreamResult(io.BytesIO(stream), non_subunit_name="stdout").run(result)
    result.stopTestRun()
    return found


def counts(results: dict[str, str]) -> Counter:
    """How many tests ended in each outcome (xfail counts as success, uxsuccess as fail)."""
    folded = {"xfail": "success", "uxsuccess": "fail"}
    return Counter(folded.get(status, status) for status in results.values())


def fixture_failures(results: dict[str, str]) -> list[str]:
    """Classes whose setUpClass or tearDownClass failed (their tests never ran)."""
    return sorted(match["cls"] for test, status in results.items()
                  if status == "fail" and (match := _CLASS_FIXTURE.match(test)))


def differences(first: dict[str, str], second: dict[str, str]) -> list[tuple[str, str, str]]:
    """``(test, status in first, status in second)`` for every test whose result differs."""
    return [(test, first.get(test, "absent"), second.get(test, "absent"))
            for test in sorted(set(first) | set(second))
            if first.get(test, "absent") != second.get(test, "absent")]


def comparison(runs: dict[str, dict[str, str]]) -> str:
    """The runs' counts side by side, then the tests whose results differ."""
    names = list(runs)
    width = max(len(name) for name in names) + 2
    lines = ["outcome".ljust(10) + "".join(name.rjust(width) for name in names)]
    tallies = {name: counts(results) for name, results in runs.items()}
    for outcome in OUTCOMES:
        lines.append(outcome.ljust(10) + "".join(str(tallies[n][outcome]).rjust(width)
                                                 for n in names))
    lines.append("total".ljust(10) + "".join(str(len(runs[n])).rjust(width) for n in names))
    if len(names) == 2:
        diff = differences(runs[names[0]], runs[names[1]])
        lines.append(f"tests whose result differs: {len(diff)}")
        lines += [f"  {test}: {names[0]} {a}, {names[1]} {b}" for test, a, b in diff]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("streams", nargs="+", type=pathlib.Path,
                        help="subunit v2 files, named <run>.subunit")
    args = parser.parse_args(argv)
    runs = {path.stem: statuses(path.read_bytes()) for path in args.streams}
    print(comparison(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
